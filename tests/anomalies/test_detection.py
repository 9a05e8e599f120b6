"""The detection itself, on synthetic series with one planted anomaly each."""

from __future__ import annotations

import numpy as np
import pytest

from app.anomalies.detection import MIN_POINTS, PiecewiseCost, auto_threshold, detect
from app.anomalies.model import DetectionParams, Direction, Method, Model
from tests.anomalies.series import (
    Series,
    clean_series,
    with_flatline,
    with_level_shift,
    with_noise_burst,
    with_slope_change,
    with_spike,
)

HOUR_US = 3_600_000_000


def run(series: Series, **params: object) -> object:
    return detect(series.timestamps, series.values, DetectionParams(**params))  # type: ignore[arg-type]


def windows_of(series: Series, kind: str, **params: object) -> list[tuple[int, int]]:
    detection = detect(series.timestamps, series.values, DetectionParams(**params))  # type: ignore[arg-type]
    return [
        (series.index_of(w.start_us), series.index_of(w.end_us))
        for w in detection.windows
        if w.kind == kind
    ]


@pytest.mark.parametrize("readings", [1, 2, 3])
def test_a_spike_is_one_window_of_its_readings(readings: int) -> None:
    series = with_spike(clean_series(), at=1500, readings=readings)
    detection = detect(series.timestamps, series.values, DetectionParams())
    assert [(w.kind, w.count) for w in detection.windows] == [("spike", readings)]
    assert series.index_of(detection.windows[0].start_us) == 1500
    flagged = detection.anomalies[0]
    assert flagged.direction == "up"
    assert flagged.value > flagged.upper > flagged.expected


def test_a_dip_is_found_and_named() -> None:
    series = with_spike(clean_series(seed=1), at=2200, size=-10.0, readings=3)
    assert windows_of(series, "dip") == [(2200, 2202)]


def test_a_level_shift_is_a_change_point_at_its_reading() -> None:
    series = with_level_shift(clean_series(seed=2), at=2000)
    detection = detect(series.timestamps, series.values, DetectionParams())
    assert [(series.index_of(c.timestamp_us), c.kind) for c in detection.change_points] == [
        (2000, "level_shift")
    ]
    assert detection.change_points[0].magnitude == pytest.approx(8.0, abs=1.0)
    assert detection.window_total == 0  # the new level is expected, not anomalous


def test_a_slope_change_is_a_change_point_near_its_start() -> None:
    series = with_slope_change(clean_series(seed=3), at=2500)
    detection = detect(series.timestamps, series.values, DetectionParams())
    assert [c.kind for c in detection.change_points] == ["slope_change"]
    found = series.index_of(detection.change_points[0].timestamp_us)
    assert abs(found - 2500) <= 96  # within a day of readings
    assert detection.change_points[0].magnitude == pytest.approx(0.5, abs=0.15)


def test_a_flatline_is_a_window_of_the_stuck_readings() -> None:
    series = with_flatline(clean_series(seed=4), at=3000, readings=16)
    # The stuck value repeats the reading before the run: 17 equal readings.
    assert windows_of(series, "flatline") == [(2999, 3015)]


def test_a_noise_burst_is_one_noise_window_over_the_burst() -> None:
    series = with_noise_burst(clean_series(seed=5), at=1000, readings=24)
    windows = windows_of(series, "noise")
    assert len(windows) == 1
    begin, end = windows[0]
    assert begin >= 1000
    assert end < 1024


def test_a_noise_burst_buys_no_change_point() -> None:
    # Six days around a burst: the burst's variance must not pay for a segment of its own.
    for seed in range(20):
        series = with_noise_burst(clean_series(576, seed=seed, cycle=0.5), at=300, factor=8)
        detection = detect(series.timestamps, series.values, DetectionParams())
        assert detection.change_points == [], seed


@pytest.mark.parametrize("method", list(Method))
def test_every_method_finds_a_level_shift(method: Method) -> None:
    series = with_level_shift(clean_series(seed=6), at=1800, size=10.0)
    detection = detect(series.timestamps, series.values, DetectionParams(method=method))
    assert [series.index_of(c.timestamp_us) for c in detection.change_points] == [1800]


def test_clean_noise_raises_few_false_alarms() -> None:
    # Auto thresholds aim at 0.05 false flags per series: 30 clean series, at most 4 flags.
    false_windows = false_changes = 0
    for seed in range(30):
        series = clean_series(seed=100 + seed)
        detection = detect(series.timestamps, series.values, DetectionParams())
        false_windows += detection.window_total
        false_changes += len(detection.change_points)
    assert false_windows <= 4
    assert false_changes <= 2


def test_a_quantised_sensor_is_not_flagged_as_flat() -> None:
    series = clean_series(seed=7)
    series.values = np.round(series.values)  # integer readings repeat all the time
    assert windows_of(series, "flatline") == []


def test_direction_keeps_only_deviations_that_way() -> None:
    series = with_spike(with_spike(clean_series(seed=8), at=1000), at=3000, size=-12.0)
    up = detect(series.timestamps, series.values, DetectionParams(direction=Direction.UP))
    down = detect(series.timestamps, series.values, DetectionParams(direction=Direction.DOWN))
    assert [w.kind for w in up.windows] == ["spike"]
    assert [w.kind for w in down.windows] == ["dip"]


def test_n_bkps_gives_exactly_that_many_change_points() -> None:
    series = with_level_shift(clean_series(seed=9), at=2000)
    detection = detect(series.timestamps, series.values, DetectionParams(n_bkps=3))
    assert len(detection.change_points) == 3
    assert detection.params is not None
    assert detection.params.penalty is None


def test_the_chosen_penalty_and_threshold_are_reported() -> None:
    series = clean_series(seed=10)
    detection = detect(series.timestamps, series.values, DetectionParams())
    assert detection.params is not None
    assert detection.params.penalty is not None
    assert detection.params.penalty > 0
    assert detection.params.penalty_rule.startswith("auto: BIC")
    assert detection.params.threshold == pytest.approx(auto_threshold(4000), abs=1e-3)
    given = detect(series.timestamps, series.values, DetectionParams(penalty=5.0, threshold=4))
    assert given.params is not None
    assert (given.params.penalty, given.params.threshold) == (5.0, 4.0)
    assert given.params.digest != detection.params.digest


def test_a_short_series_is_explained_not_fitted() -> None:
    series = clean_series(points=MIN_POINTS - 1)
    detection = detect(series.timestamps, series.values, DetectionParams())
    assert detection.params is None
    assert detection.segments == []
    assert "at least" in detection.explanation[0]


def test_an_empty_series_is_explained() -> None:
    empty = detect(np.array([], dtype=np.int64), np.array([]), DetectionParams())
    assert (empty.points, empty.first_us, empty.windows) == (0, None, [])


def test_gaps_are_reported() -> None:
    series = clean_series(seed=11)
    series.timestamps[2000:] += 6 * HOUR_US
    detection = detect(series.timestamps, series.values, DetectionParams())
    assert [series.index_of(g.end_us) for g in detection.gaps] == [2000]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"penalty": -1.0}, "penalty"),
        ({"n_bkps": 2, "penalty": 3.0}, "n_bkps"),
        ({"n_bkps": 2, "method": Method.PELT}, "pelt"),
        ({"threshold": 0.5}, "threshold"),
        ({"min_segment_seconds": 10.0}, "min_segment"),
    ],
)
def test_invalid_parameters_name_themselves(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DetectionParams(**params).validate()  # type: ignore[arg-type]


@pytest.mark.parametrize("model", list(Model))
def test_the_piecewise_cost_is_the_least_squares_residual(model: Model) -> None:
    rng = np.random.default_rng(12)
    x = np.sort(rng.uniform(0, 30, 200))
    y = 3 + 0.4 * x + rng.normal(0, 1, 200)
    cost = PiecewiseCost(model, 2).fit(np.column_stack([x, y]))
    for start, end in [(0, 200), (17, 90), (150, 153)]:
        columns = [np.ones(end - start)]
        if model is Model.LINEAR:
            columns.append(x[start:end])
        design = np.column_stack(columns)
        _, residual, *_ = np.linalg.lstsq(design, y[start:end], rcond=None)
        assert cost.error(start, end) == pytest.approx(float(residual[0]), rel=1e-6)


def test_a_reading_of_weight_zero_is_out_of_the_cost() -> None:
    rng = np.random.default_rng(13)
    x = np.sort(rng.uniform(0, 30, 100))
    y = 3 + 0.4 * x + rng.normal(0, 1, 100)
    y[40:45] += 50  # what the second pass ignores
    weights = np.ones(100)
    weights[40:45] = 0
    cost = PiecewiseCost(Model.LINEAR, 2).fit(np.column_stack([x, y, weights]))
    keep = weights > 0
    design = np.column_stack([np.ones(keep.sum()), x[keep]])
    _, residual, *_ = np.linalg.lstsq(design, y[keep], rcond=None)
    assert cost.error(0, 100) == pytest.approx(float(residual[0]), rel=1e-6)
    assert cost.error(40, 45) == 0.0
