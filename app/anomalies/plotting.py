"""The picture an analyst looks at: readings, fitted segments, the expected band, flagged
readings, change points and flat-lines."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display in a server process

import itertools

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from app.anomalies.model import Detection, FloatArray, IntArray

# Above this many readings the raw series is drawn as a min/max envelope per pixel column
# instead of a line: same picture, a fraction of the drawing time.
ENVELOPE_ABOVE = 20_000
WIDTH_PX, HEIGHT_PX, DPI = 1400, 600, 100
WINDOW_COLOURS = {
    "spike": "#d62728",
    "dip": "#9467bd",
    "noise": "#ff7f0e",
    "flatline": "#7f7f7f",
    "excursion_up": "#d62728",
    "excursion_down": "#9467bd",
}


def _as_datetimes(timestamps_us: IntArray) -> np.ndarray:
    return timestamps_us.astype("datetime64[us]")


def _date_number(timestamp_us: int) -> float:
    """Matplotlib's unit on a date axis: days since its default epoch, 1970-01-01."""
    return timestamp_us / 86_400_000_000


def render_png(
    timestamps_us: IntArray, values: FloatArray, detection: Detection, *, title: str, zone: str
) -> bytes:
    figure, axes = plt.subplots(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    try:
        _draw(axes, timestamps_us, values, detection)
        axes.set_title(title, fontsize=11, loc="left")
        locator = mdates.AutoDateLocator(tz=zone)  # type: ignore[no-untyped-call]
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(
            mdates.ConciseDateFormatter(locator, tz=zone)  # type: ignore[no-untyped-call]
        )
        axes.set_xlabel(f"time ({zone})")
        axes.set_ylabel("value")
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize=8, ncols=3)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)


def _draw(axes: Axes, timestamps_us: IntArray, values: FloatArray, detection: Detection) -> None:
    when = _as_datetimes(timestamps_us)
    if values.size == 0:
        axes.text(0.5, 0.5, "no readings in this range", ha="center", transform=axes.transAxes)
        return
    if values.size > ENVELOPE_ABOVE:
        columns = WIDTH_PX
        edges = np.linspace(0, values.size, columns + 1).astype(int)
        starts = edges[:-1][np.diff(edges) > 0]
        low = np.minimum.reduceat(values, starts)
        high = np.maximum.reduceat(values, starts)
        axes.fill_between(
            when[starts], low, high, color="#1f77b4", alpha=0.5, lw=0, label="readings (min-max)"
        )
    else:
        axes.plot(when, values, color="#1f77b4", lw=0.6, label="readings")
    if detection.expected is not None and detection.band is not None:
        expected, band = detection.expected, detection.band
        bounds = [0]
        for segment in detection.segments:
            bounds.append(bounds[-1] + segment.n)
        for number, (begin, end) in enumerate(itertools.pairwise(bounds)):
            part = slice(begin, end)
            axes.fill_between(
                when[part],
                expected[part] - band[part],
                expected[part] + band[part],
                color="#2ca02c",
                alpha=0.15,
                lw=0,
                label="expected band" if number == 0 else None,
            )
            axes.plot(
                when[part],
                expected[part],
                color="#2ca02c",
                lw=1.2,
                label="fitted segments" if number == 0 else None,
            )
    for number, change in enumerate(detection.change_points):
        axes.axvline(
            _date_number(change.timestamp_us),
            color="black",
            ls="--",
            lw=0.9,
            label="change point" if number == 0 else None,
        )
    seen: set[str] = set()
    for window in detection.windows:
        colour = WINDOW_COLOURS.get(window.kind, "#d62728")
        label = window.kind if window.kind not in seen else None
        seen.add(window.kind)
        if window.kind == "flatline":
            # Stuck readings sit on the expected line: mark them, not just their span.
            stuck = (timestamps_us >= window.start_us) & (timestamps_us <= window.end_us)
            axes.scatter(
                when[stuck], values[stuck], marker="x", color=colour, s=16, zorder=5, label=label
            )
        elif window.end_us - window.start_us > 3_600_000_000:
            axes.axvspan(
                _date_number(window.start_us),
                _date_number(window.end_us),
                color=colour,
                alpha=0.2,
                label=label,
            )
    if detection.anomalies:
        axes.scatter(
            _as_datetimes(np.array([a.timestamp_us for a in detection.anomalies], dtype=np.int64)),
            [a.value for a in detection.anomalies],
            color="#d62728",
            s=14,
            zorder=5,
            label="anomalous readings",
        )
