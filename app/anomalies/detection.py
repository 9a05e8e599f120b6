"""Anomalies of one sensor's series: change points (ruptures), then a regression per segment
(statsmodels OLS), then robust residual scores. Pure and CPU-bound: it runs in the
service's process pool, never on the event loop.

The steps, each documented in SOLUTION.md (task 4):

1. Flat-lines: runs of identical consecutive values longer than chance allows for this
   series (its own rate of repeated values), so quantised sensors are not flagged.
2. The daily cycle (a sine/cosine pair fitted on the whole range) is removed, so that the
   change-point search sees level and trend only.
3. Change points: outliers are replaced by a rolling median (spikes and bursts are not
   changes of level), the series is averaged into at most ``MAX_CPD_POINTS`` bins (ruptures'
   search is pure Python), segmented with an O(1) piecewise cost (prefix sums), and each
   break is then refined to the exact reading with the same cost at full resolution.
   ``penalty=auto`` is BIC: (parameters per segment + 1) x sigma^2 x ln(n).
4. Each segment gets an OLS fit (intercept + slope, plus the daily pair when the segment
   spans a day), refitted once without the points it flags, so spikes do not bend the fit.
5. Scores are robust z-scores: residual / (1.4826 x MAD of the segment's residuals). A
   reading is anomalous beyond ``threshold`` (auto: the Gaussian quantile at which a clean
   series of this length expects 0.002 false flags, at least 3.5). Bursts of noise are found
   by a rolling sum of squared (clipped) scores against its chi-square quantile.
6. Consecutive anomalous readings are grouped into windows and given a kind.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import ruptures as rpt
import statsmodels.api as sm
from ruptures.base import BaseCost
from scipy import stats

from app.anomalies.model import (
    Anomaly,
    ChangePoint,
    Detection,
    DetectionParams,
    Direction,
    FloatArray,
    Gap,
    IntArray,
    Method,
    Model,
    ResolvedParams,
    Seasonality,
    Segment,
    Window,
)

MICROS_PER_DAY: Final = 86_400_000_000
# Fewer readings than this give no meaningful fit; the result says so instead of guessing.
MIN_POINTS: Final = 24
# ruptures' searches are pure Python: the signal they see is averaged down to this size.
MAX_CPD_POINTS: Final = 2000
# A gap is reported when readings stop for this many median intervals (and >= 1 hour).
GAP_FACTOR: Final = 10
MIN_GAP_MICROS: Final = 3_600_000_000
# Auto threshold: expected false flags over a whole clean series, and a floor. One in 500
# clean series: a scan of a 500-sensor fleet expects about one false alarm in total.
FALSE_FLAGS_PER_SERIES: Final = 0.002
MIN_AUTO_THRESHOLD: Final = 3.5
# The noise-burst test counts readings above ELEVATED_SCORE per rolling NOISE_WINDOW.
NOISE_WINDOW: Final = 8
ELEVATED_SCORE: Final = 2.5
# Flagged readings at most this many positions apart belong to one window.
MERGE_GAP: Final = 2
# A spike or dip is at most this many readings; longer one-sided runs are excursions.
MAX_SPIKE_READINGS: Final = 3
# Before the change-point search, readings beyond OUTLIER_SDS robust sds of a rolling
# median of OUTLIER_WINDOW readings are replaced by that median.
OUTLIER_WINDOW: Final = 2 * NOISE_WINDOW + 1
OUTLIER_SDS: Final = 4.0
# A break whose fitted values jump by more than this many residual sds is a level shift.
LEVEL_SHIFT_SDS: Final = 2.0
MAD_TO_SD: Final = 1.4826
# Lists in a result are capped; totals are always reported.
MAX_LISTED: Final = 1000


class PiecewiseCost(BaseCost):  # type: ignore[misc]
    """Weighted sum of squared residuals of a constant or a straight line per segment, in
    O(1) per segment from prefix sums. ruptures' own `linear` cost solves a least-squares
    problem per candidate segment, which is orders of magnitude slower. A weight of 0 takes
    a reading out of every segment's fit (the second pass uses it for known anomalies)."""

    def __init__(self, model: Model, min_size: int) -> None:
        self._model = model
        self.min_size = min_size

    @property
    def model(self) -> str:
        return f"piecewise_{self._model}"

    def fit(self, signal: FloatArray) -> PiecewiseCost:
        """Columns: time (days), value, and optionally a weight per row (default 1)."""
        self.signal = signal  # ruptures reads the length from here
        w = signal[:, 2] if signal.shape[1] > 2 else np.ones(signal.shape[0])
        total = max(float(w.sum()), 1e-12)
        # Centring keeps the sums well scaled.
        x = signal[:, 0] - float((w * signal[:, 0]).sum()) / total
        y = signal[:, 1] - float((w * signal[:, 1]).sum()) / total
        zero = np.zeros(1)
        self._sw = np.concatenate([zero, np.cumsum(w)])
        self._sx = np.concatenate([zero, np.cumsum(w * x)])
        self._sy = np.concatenate([zero, np.cumsum(w * y)])
        self._sxx = np.concatenate([zero, np.cumsum(w * x * x)])
        self._syy = np.concatenate([zero, np.cumsum(w * y * y)])
        self._sxy = np.concatenate([zero, np.cumsum(w * x * y)])
        return self

    def error(self, start: int, end: int) -> float:
        m = self._sw[end] - self._sw[start]
        if m <= 1e-9:
            return 0.0
        sy = self._sy[end] - self._sy[start]
        syy = self._syy[end] - self._syy[start] - sy * sy / m
        if self._model is Model.CONSTANT:
            return float(max(syy, 0.0))
        sx = self._sx[end] - self._sx[start]
        sxx = self._sxx[end] - self._sxx[start] - sx * sx / m
        if sxx <= 1e-12:
            return float(max(syy, 0.0))
        sxy = self._sxy[end] - self._sxy[start] - sx * sy / m
        return float(max(syy - sxy * sxy / sxx, 0.0))


def auto_threshold(points: int) -> float:
    """The two-sided Gaussian quantile at which `points` clean readings expect
    FALSE_FLAGS_PER_SERIES false flags, at least MIN_AUTO_THRESHOLD."""
    tail = FALSE_FLAGS_PER_SERIES / (2 * max(points, 1))
    return float(max(MIN_AUTO_THRESHOLD, stats.norm.isf(tail)))


def resolve_min_segment(span_us: int) -> float:
    """Auto min_segment: a twentieth of the range, between 1 hour and 1 day."""
    return float(min(86_400.0, max(3_600.0, span_us / 1e6 / 20)))


def robust_sd(residuals: FloatArray) -> float:
    if residuals.size == 0:
        return 0.0
    median = float(np.median(residuals))
    return MAD_TO_SD * float(np.median(np.abs(residuals - median)))


def detect(timestamps_us: IntArray, values: FloatArray, params: DetectionParams) -> Detection:
    """Everything about one series; timestamps in microseconds since the epoch, ascending."""
    params.validate()
    n = int(values.size)
    first = int(timestamps_us[0]) if n else None
    last = int(timestamps_us[-1]) if n else None
    gaps = find_gaps(timestamps_us)
    detection = Detection(
        points=n,
        first_us=first,
        last_us=last,
        gaps=gaps[:MAX_LISTED],
        gap_total=len(gaps),
        params=None,
    )
    if n < MIN_POINTS:
        detection.explanation.append(
            f"{n} readings in the range: at least {MIN_POINTS} are needed for a fit, "
            "so nothing was analysed. Widen the range."
        )
        return detection

    days = (timestamps_us - timestamps_us[0]) / MICROS_PER_DAY
    flat_runs = find_flatlines(values)
    flat = np.zeros(n, dtype=bool)
    for begin, end in flat_runs:
        flat[begin:end] = True

    seasonal = seasonal_component(timestamps_us, days, values, flat, params.seasonality)
    adjusted = values - seasonal

    threshold = params.threshold if params.threshold is not None else auto_threshold(n)
    span_us = int(timestamps_us[-1] - timestamps_us[0])
    min_segment = (
        params.min_segment_seconds
        if params.min_segment_seconds is not None
        else resolve_min_segment(span_us)
    )
    breaks, resolved = change_points(days, adjusted, params, min_segment, threshold)
    segments, expected, scale = fit_segments(
        timestamps_us, days, values, flat, breaks, params, threshold
    )
    scores = robust_scores(values, expected, scale, flat)
    # Second pass: the change points are searched again with the first fit's spikes, dips
    # and noise bursts weighing nothing, so that anomalies cannot pose as changes of level
    # or trend. (Replacing them by the first fit's expected values would carry the first
    # segmentation over; by a straight line, would add a stretch without noise.)
    transient = transient_readings(scores, threshold)
    if transient.any() and not transient.all():
        second, resolved = change_points(
            days, adjusted, params, min_segment, threshold, ignored=transient
        )
        if second != breaks:
            breaks = second
            segments, expected, scale = fit_segments(
                timestamps_us, days, values, flat, breaks, params, threshold
            )
            scores = robust_scores(values, expected, scale, flat)
    detection.params = resolved
    detection.segments = segments
    detection.change_points = classify_breaks(timestamps_us, days, breaks, segments)

    residuals = values - expected
    flagged = np.abs(scores) > threshold
    if params.direction is Direction.UP:
        flagged &= scores > 0
    elif params.direction is Direction.DOWN:
        flagged &= scores < 0
    noisy = noise_bursts(scores) if params.direction is Direction.BOTH else np.zeros(n, dtype=bool)

    anomalies = [
        Anomaly(
            timestamp_us=int(timestamps_us[i]),
            value=float(values[i]),
            expected=float(expected[i]),
            lower=float(expected[i] - threshold * scale[i]),
            upper=float(expected[i] + threshold * scale[i]),
            residual=float(residuals[i]),
            score=round(float(scores[i]), 3),
            direction="up" if scores[i] > 0 else "down",
        )
        for i in np.flatnonzero(flagged)
    ]
    detection.anomaly_total = len(anomalies)
    detection.anomalies = anomalies[:MAX_LISTED]
    windows = group_windows(timestamps_us, scores, flagged, noisy)
    if params.direction is Direction.BOTH:
        windows += [
            Window(
                start_us=int(timestamps_us[begin]),
                end_us=int(timestamps_us[end - 1]),
                count=end - begin,
                peak_score=0.0,
                kind="flatline",
            )
            for begin, end in flat_runs
        ]
        windows.sort(key=lambda w: w.start_us)
    detection.window_total = len(windows)
    detection.windows = windows[:MAX_LISTED]
    detection.expected = expected
    detection.band = threshold * scale
    detection.explanation = explain(detection, resolved, len(flat_runs))
    return detection


def fit_segments(
    timestamps_us: IntArray,
    days: FloatArray,
    values: FloatArray,
    flat: npt.NDArray[np.bool_],
    breaks: list[int],
    params: DetectionParams,
    threshold: float,
) -> tuple[list[Segment], FloatArray, FloatArray]:
    """Each segment's fit, and per reading its expected value and residual sd."""
    n = values.size
    segments = []
    expected = np.empty(n)
    scale = np.empty(n)
    for begin, end in itertools.pairwise([0, *breaks, n]):
        segment, fitted, sd = fit_segment(
            timestamps_us, days, values, flat, begin, end, params, threshold
        )
        segments.append(segment)
        expected[begin:end] = fitted
        scale[begin:end] = sd
    return segments, expected, scale


def robust_scores(
    values: FloatArray, expected: FloatArray, scale: FloatArray, flat: npt.NDArray[np.bool_]
) -> FloatArray:
    scores: FloatArray = (values - expected) / np.where(scale > 0, scale, np.inf)
    scores[flat] = 0.0
    return scores


def find_gaps(timestamps_us: IntArray) -> list[Gap]:
    if timestamps_us.size < 3:
        return []
    steps = np.diff(timestamps_us)
    limit = max(MIN_GAP_MICROS, GAP_FACTOR * float(np.median(steps)))
    return [
        Gap(
            start_us=int(timestamps_us[i]),
            end_us=int(timestamps_us[i + 1]),
            seconds=float(steps[i]) / 1e6,
        )
        for i in np.flatnonzero(steps > limit)
    ]


def find_flatlines(values: FloatArray) -> list[tuple[int, int]]:
    """[begin, end) runs of one repeated value, longer than this series' own rate of
    repeats makes plausible (fewer than 0.01 such runs expected by chance)."""
    if values.size < 3:
        return []
    same = np.diff(values) == 0
    repeat_rate = float(same.mean())
    if repeat_rate >= 0.5:
        return []  # a quantised or mostly constant sensor: repeats are its normal state
    # A run of L equal readings is L-1 repeats in a row.
    repeats_needed = 2
    if repeat_rate > 0:
        repeats_needed = max(2, math.ceil(math.log(0.01 / values.size) / math.log(repeat_rate)))
    runs = []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], same.astype(np.int8), [0]])))
    for begin, end in zip(edges[::2], edges[1::2], strict=True):
        if end - begin >= repeats_needed:
            runs.append((int(begin), int(end) + 1))  # repeats i..end-1 cover readings i..end
    return runs


def daily_design(timestamps_us: IntArray) -> FloatArray:
    phase = 2 * np.pi * (timestamps_us % MICROS_PER_DAY) / MICROS_PER_DAY
    return np.column_stack([np.sin(phase), np.cos(phase)])


def seasonal_component(
    timestamps_us: IntArray,
    days: FloatArray,
    values: FloatArray,
    flat: npt.NDArray[np.bool_],
    seasonality: Seasonality,
) -> FloatArray:
    """The daily cycle of the whole range (zero when off or the range is under 2 days)."""
    if seasonality is Seasonality.NONE or days[-1] < 2:
        return np.zeros(values.size)
    cycle = daily_design(timestamps_us)
    design = np.column_stack([np.ones(values.size), days, cycle])
    keep = ~flat
    fit = sm.OLS(values[keep], design[keep]).fit()
    component: FloatArray = cycle @ fit.params[2:]
    return component


def change_points(
    days: FloatArray,
    adjusted: FloatArray,
    params: DetectionParams,
    min_segment_seconds: float,
    threshold: float,
    ignored: npt.NDArray[np.bool_] | None = None,
) -> tuple[list[int], ResolvedParams]:
    """Indices where new segments start, and the parameters as used. `ignored` readings
    weigh nothing in any segment's cost."""
    adjusted = tame_outliers(adjusted)
    n = adjusted.size
    weights = np.ones(n) if ignored is None else (~ignored).astype(np.float64)
    # Pelt's pure-Python search grows quadratically where it cannot prune: fewer points.
    most = MAX_CPD_POINTS // 2 if params.method is Method.PELT else MAX_CPD_POINTS
    per_bin = max(1, math.ceil(n / most))
    starts = np.arange(0, n, per_bin)
    counts = np.diff(np.append(starts, n))
    binned_days = np.add.reduceat(days, starts) / counts
    bin_weights = np.add.reduceat(weights, starts)
    binned = np.add.reduceat(weights * adjusted, starts) / np.maximum(bin_weights, 1e-12)
    # A bin weighs the share of its readings that count.
    signal = np.column_stack([binned_days, binned, bin_weights / counts])
    bins = binned.size
    counted = bin_weights > 0

    model_size = 2 if params.model is Model.LINEAR else 1
    span_days = max(float(days[-1]), 1e-9)
    bins_per_day = bins / span_days
    min_size = max(model_size + 1, math.ceil(min_segment_seconds / 86_400 * bins_per_day))

    # BIC: each extra segment costs its parameters plus its break position, in units of
    # the noise variance of the binned series (robustly, from first differences).
    sigma = robust_sd(np.diff(binned[counted])) / math.sqrt(2)
    sigma = max(sigma, 1e-12 * (float(np.abs(binned[counted]).mean()) + 1.0))
    if params.penalty is None and params.n_bkps is None:
        penalty: float | None = (model_size + 1) * sigma**2 * math.log(bins)
        rule = f"auto: BIC = {model_size + 1} x sigma^2 x ln(n), sigma {sigma:.4g}, n {bins}"
    elif params.penalty is not None:
        penalty, rule = params.penalty, "given"
    else:
        penalty, rule = None, f"none: n_bkps={params.n_bkps} given"

    resolved = ResolvedParams(
        method=params.method.value,
        model=params.model.value,
        penalty=None if penalty is None else round(penalty, 6),
        penalty_rule=rule,
        n_bkps=params.n_bkps,
        min_segment_seconds=min_segment_seconds,
        threshold=round(threshold, 4),
        threshold_rule="given"
        if params.threshold is not None
        else f"auto: Gaussian quantile for {FALSE_FLAGS_PER_SERIES} false flags in {n} "
        f"readings (>= {MIN_AUTO_THRESHOLD})",
        direction=params.direction.value,
        seasonality=params.seasonality.value,
        cpd_points=bins,
        readings_per_cpd_point=per_bin,
    )
    if bins < 2 * min_size:
        return [], resolved

    cost = PiecewiseCost(params.model, min_size)
    estimator: Any
    if params.method is Method.PELT:
        estimator = rpt.Pelt(custom_cost=cost, min_size=min_size, jump=1)
    elif params.method is Method.BINSEG:
        estimator = rpt.Binseg(custom_cost=cost, min_size=min_size, jump=1)
    elif params.method is Method.BOTTOMUP:
        estimator = rpt.BottomUp(custom_cost=cost, min_size=min_size, jump=1)
    elif params.method is Method.WINDOW:
        estimator = rpt.Window(width=2 * min_size, custom_cost=cost, min_size=min_size, jump=1)
    else:
        # Kernel change points are mean changes of the (seasonally adjusted) values; the
        # C implementation needs a plain signal rather than a custom cost.
        estimator = rpt.KernelCPD(kernel="linear", min_size=min_size, jump=1)
        # It takes no weights: bins without a counted reading take their neighbours' level.
        filled = np.interp(binned_days, binned_days[counted], binned[counted])
        signal = filled.reshape(-1, 1)
    estimator.fit(signal)
    try:
        if penalty is not None:
            ends = estimator.predict(pen=penalty)
        else:
            ends = estimator.predict(n_bkps=params.n_bkps)
    except rpt.exceptions.BadSegmentationParameters:
        return [], resolved
    coarse = [int(starts[b]) for b in ends[:-1]]
    settler = BreakSettler(days, adjusted, weights, params.model)
    raw_penalty = None
    if params.n_bkps is None:
        # The same criterion at full resolution: BIC from the readings' own noise when
        # auto, else the given penalty scaled by readings per bin (costs scale with it).
        raw_sigma = robust_sd(np.diff(adjusted[weights > 0])) / math.sqrt(2)
        raw_penalty = (
            (model_size + 1) * raw_sigma**2 * math.log(n)
            if params.penalty is None
            else params.penalty * per_bin
        )
    # Breaks may move by up to a minimum segment: a bin straddling a step can pull the
    # coarse break that far off.
    radius = max(per_bin, min_size * per_bin)
    breaks = settler.settle(coarse, radius, min_segment_seconds / 86_400, raw_penalty)
    return breaks, resolved


def tame_outliers(values: FloatArray) -> FloatArray:
    """Readings further than OUTLIER_SDS robust sds from a rolling median, replaced by that
    median, for the change-point search only: spikes and noise bursts are not changes of
    level or trend and must not buy segments. A median filter keeps steps sharp, so level
    shifts are left where they are."""
    median = (
        pd.Series(values)
        .rolling(OUTLIER_WINDOW, center=True, min_periods=1)
        .median()
        .to_numpy(dtype=np.float64)
    )
    residuals = values - median
    limit = OUTLIER_SDS * robust_sd(residuals)
    tamed: FloatArray = np.where(np.abs(residuals) > limit, median, values)
    return tamed


class BreakSettler:
    """Breaks found on the binned signal, settled at full resolution with the same cost:
    each moved to its best reading near where it was found, then segments shorter than
    min_segment merged, then (penalty mode) breaks that do not pay for their penalty
    dropped, weakest first. This removes the short ramps a bin straddling a step creates."""

    def __init__(
        self, days: FloatArray, adjusted: FloatArray, weights: FloatArray, model: Model
    ) -> None:
        self._days = days
        self._n = adjusted.size
        self._cost = PiecewiseCost(model, 1).fit(np.column_stack([days, adjusted, weights]))

    def settle(
        self, coarse: list[int], radius: int, min_segment_days: float, penalty: float | None
    ) -> list[int]:
        breaks = sorted(set(coarse))
        breaks = self._refine(breaks, radius)
        while breaks:
            short = self._shortest_below(breaks, min_segment_days)
            if short is None:
                break
            breaks = self._refine(self._drop_weakest(breaks, candidates=short), radius)
        while penalty is not None and breaks:
            gains = self._gains(breaks)
            weakest = min(range(len(breaks)), key=gains.__getitem__)
            if gains[weakest] >= penalty:
                break
            breaks = self._refine([b for k, b in enumerate(breaks) if k != weakest], radius)
        return breaks

    def _refine(self, breaks: list[int], radius: int) -> list[int]:
        refined = list(breaks)
        for k in range(len(refined)):
            left = refined[k - 1] if k else 0
            right = refined[k + 1] if k + 1 < len(refined) else self._n
            low = max(left + 2, refined[k] - radius)
            high = min(right - 2, refined[k] + radius)
            if high > low:
                refined[k] = min(
                    range(low, high + 1),
                    key=lambda c: self._cost.error(left, c) + self._cost.error(c, right),
                )
        return sorted(set(refined))

    def _gains(self, breaks: list[int]) -> list[float]:
        """How much each break lowers the cost of its two neighbouring segments."""
        bounds = [0, *breaks, self._n]
        return [
            self._cost.error(bounds[k], bounds[k + 2])
            - self._cost.error(bounds[k], bounds[k + 1])
            - self._cost.error(bounds[k + 1], bounds[k + 2])
            for k in range(len(breaks))
        ]

    def _shortest_below(self, breaks: list[int], min_days: float) -> list[int] | None:
        """Indices (into breaks) of the breaks around the shortest too-short segment."""
        bounds = [0, *breaks, self._n]
        lengths = [
            self._days[bounds[k + 1] - 1] - self._days[bounds[k]] for k in range(len(bounds) - 1)
        ]
        shortest = min(range(len(lengths)), key=lengths.__getitem__)
        if lengths[shortest] >= min_days:
            return None
        # Segment k lies between breaks k-1 and k.
        return [k for k in (shortest - 1, shortest) if 0 <= k < len(breaks)]

    def _drop_weakest(self, breaks: list[int], candidates: list[int]) -> list[int]:
        gains = self._gains(breaks)
        weakest = min(candidates, key=gains.__getitem__)
        return [b for k, b in enumerate(breaks) if k != weakest]


def fit_segment(
    timestamps_us: IntArray,
    days: FloatArray,
    values: FloatArray,
    flat: npt.NDArray[np.bool_],
    begin: int,
    end: int,
    params: DetectionParams,
    threshold: float,
) -> tuple[Segment, FloatArray, float]:
    """OLS of one segment, refitted once without the readings it flags."""
    local_days = days[begin:end] - days[begin]
    columns = [np.ones(end - begin)]
    if params.model is Model.LINEAR:
        columns.append(local_days)
    seasonal_from = len(columns)
    if params.seasonality is Seasonality.DAILY and local_days[-1] >= 1:
        columns.extend(daily_design(timestamps_us[begin:end]).T)
    design = np.column_stack(columns)
    y = values[begin:end]
    keep = ~flat[begin:end]
    if keep.sum() < design.shape[1] + 2:
        keep = np.ones(end - begin, dtype=bool)
    fit = sm.OLS(y[keep], design[keep]).fit()
    fitted = design @ fit.params
    residuals = y - fitted
    sd = robust_sd(residuals[keep])
    if sd > 0:
        inliers = keep & (np.abs(residuals) <= threshold * sd)
        if design.shape[1] + 2 <= inliers.sum() < keep.sum():
            fit = sm.OLS(y[inliers], design[inliers]).fit()
            fitted = design @ fit.params
            residuals = y - fitted
            sd = robust_sd(residuals[inliers])
    slope = float(fit.params[1]) if params.model is Model.LINEAR else 0.0
    daily_amplitude = 0.0
    if design.shape[1] > seasonal_from:
        daily_amplitude = float(np.hypot(*fit.params[seasonal_from : seasonal_from + 2]))
    r2 = float(fit.rsquared) if design.shape[1] > 1 and math.isfinite(fit.rsquared) else 0.0
    segment = Segment(
        start_us=int(timestamps_us[begin]),
        end_us=int(timestamps_us[end - 1]),
        n=end - begin,
        slope_per_day=slope,
        intercept=float(fit.params[0]),
        daily_amplitude=daily_amplitude,
        r2=round(r2, 6),
        residual_sd=sd,
    )
    return segment, fitted, sd


def classify_breaks(
    timestamps_us: IntArray, days: FloatArray, breaks: list[int], segments: list[Segment]
) -> list[ChangePoint]:
    """Level shift when the two fits jump apart at the break by more than LEVEL_SHIFT_SDS
    residual sds, else a slope change."""
    points = []
    for index, (left, right) in zip(breaks, itertools.pairwise(segments), strict=True):
        at_day = (timestamps_us[index] - left.start_us) / MICROS_PER_DAY
        left_value = left.intercept + left.slope_per_day * at_day
        jump = right.intercept - left_value
        sd = max(left.residual_sd, right.residual_sd)
        if sd == 0 or abs(jump) > LEVEL_SHIFT_SDS * sd:
            points.append(ChangePoint(int(timestamps_us[index]), "level_shift", float(jump)))
        else:
            change = right.slope_per_day - left.slope_per_day
            points.append(ChangePoint(int(timestamps_us[index]), "slope_change", float(change)))
    return points


def noise_bursts(scores: FloatArray) -> npt.NDArray[np.bool_]:
    """Readings inside a rolling window of NOISE_WINDOW holding so many elevated scores
    (|z| > ELEVATED_SCORE) that a clean series of this length expects fewer than
    FALSE_FLAGS_PER_SERIES such windows, and more than a spike's readings."""
    n = scores.size
    noisy = np.zeros(n, dtype=bool)
    if n < NOISE_WINDOW:
        return noisy
    rate = 2 * float(stats.norm.sf(ELEVATED_SCORE))
    needed = MAX_SPIKE_READINGS + 2
    while needed < NOISE_WINDOW and n * stats.binom.sf(needed - 1, NOISE_WINDOW, rate) > (
        FALSE_FLAGS_PER_SERIES
    ):
        needed += 1
    elevated = (np.abs(scores) > ELEVATED_SCORE).astype(np.int64)
    counts = np.convolve(elevated, np.ones(NOISE_WINDOW, dtype=np.int64), mode="valid")
    for start in np.flatnonzero(counts >= needed):
        noisy[start : start + NOISE_WINDOW] = True
    return noisy & (elevated > 0)


def marked_groups(
    scores: FloatArray, flagged: npt.NDArray[np.bool_], noisy: npt.NDArray[np.bool_]
) -> list[tuple[IntArray, str]]:
    """Flagged readings and noise-burst readings at most MERGE_GAP apart, each group with
    its kind."""
    marked = np.flatnonzero(flagged | noisy)
    if marked.size == 0:
        return []
    # Noise-burst readings bridge longer runs of calm readings than flags do: a burst is
    # one window even where a few of its readings happen to look normal.
    gaps = np.diff(marked)
    bridged = noisy[marked[:-1]] & noisy[marked[1:]] & (gaps <= NOISE_WINDOW)
    splits = np.flatnonzero((gaps > MERGE_GAP) & ~bridged) + 1
    groups = []
    for group in np.split(marked, splits):
        hits = group[flagged[group]]
        up = bool((scores[hits] > 0).any())
        down = bool((scores[hits] < 0).any())
        if noisy[group].any() or (up and down):
            kind = "noise"
        elif hits.size <= MAX_SPIKE_READINGS:
            kind = "spike" if up else "dip"
        else:
            kind = "excursion_up" if up else "excursion_down"
        groups.append((group, kind))
    return groups


def group_windows(
    timestamps_us: IntArray,
    scores: FloatArray,
    flagged: npt.NDArray[np.bool_],
    noisy: npt.NDArray[np.bool_],
) -> list[Window]:
    return [
        Window(
            start_us=int(timestamps_us[group[0]]),
            end_us=int(timestamps_us[group[-1]]),
            count=int(group.size),
            peak_score=round(float(np.abs(scores[group]).max()), 3),
            kind=kind,
        )
        for group, kind in marked_groups(scores, flagged, noisy)
    ]


def transient_readings(scores: FloatArray, threshold: float) -> npt.NDArray[np.bool_]:
    """The readings of spikes, dips and noise bursts (not of longer one-sided excursions,
    which may be a shift the change-point search missed)."""
    transient = np.zeros(scores.size, dtype=bool)
    for group, kind in marked_groups(scores, np.abs(scores) > threshold, noise_bursts(scores)):
        if kind in ("spike", "dip"):
            transient[group[0] : group[-1] + 1] = True
        elif kind == "noise":
            # A burst's first and last readings may look calm: take a margin.
            transient[max(0, group[0] - NOISE_WINDOW) : group[-1] + 1 + NOISE_WINDOW] = True
    return transient


def explain(detection: Detection, params: ResolvedParams, flatlines: int) -> list[str]:
    lines = [
        f"{detection.points} readings; {len(detection.segments)} segment(s) from "
        f"{params.method} change points on {params.cpd_points} points "
        f"({params.readings_per_cpd_point} reading(s) each), penalty "
        f"{params.penalty if params.penalty is not None else 'none'} ({params.penalty_rule}).",
        f"Each segment: OLS of value on time ({params.model}"
        f"{', plus a daily cycle' if params.seasonality == 'daily' else ''}), refitted "
        "without the readings it flags.",
        f"A reading is anomalous when |residual| > {params.threshold:g} x the segment's "
        f"robust sd (1.4826 x MAD) ({params.threshold_rule}).",
    ]
    kinds: dict[str, int] = {}
    for window in detection.windows:
        kinds[window.kind] = kinds.get(window.kind, 0) + 1
    if detection.window_total:
        listed = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
        lines.append(
            f"{detection.anomaly_total} anomalous reading(s) in {detection.window_total} "
            f"window(s): {listed}."
        )
    else:
        lines.append("No anomalous readings.")
    if flatlines:
        lines.append(
            f"{flatlines} flat-line(s): runs of one repeated value longer than chance allows "
            "for this sensor."
        )
    if detection.gap_total:
        lines.append(
            f"{detection.gap_total} gap(s) with no readings for over {GAP_FACTOR} median "
            "intervals (and at least 1 hour)."
        )
    return lines
