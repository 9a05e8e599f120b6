"""Small synthetic series with known anomalies, shared by the detection and API tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.anomalies.model import FloatArray, IntArray

START_US = 1_356_998_400_000_000  # 2013-01-01 00:00 UTC
STEP_US = 15 * 60 * 1_000_000
NOISE_SD = 1.0


@dataclass
class Series:
    timestamps: IntArray
    values: FloatArray

    def index_of(self, timestamp_us: int) -> int:
        return int(np.searchsorted(self.timestamps, timestamp_us))


def clean_series(points: int = 4000, seed: int = 0, *, cycle: float = 1.5) -> Series:
    """15-minute readings with jittered times: level, drift, a daily cycle and noise."""
    rng = np.random.default_rng(seed)
    jitter = rng.integers(-120, 121, points) * 1_000_000
    timestamps = START_US + np.arange(points, dtype=np.int64) * STEP_US + jitter
    days = (timestamps - START_US) / 86_400_000_000
    phase = 2 * np.pi * (timestamps % 86_400_000_000) / 86_400_000_000
    values = 20 + 0.01 * days + cycle * np.sin(phase) + rng.normal(0, NOISE_SD, points)
    return Series(timestamps, values)


def with_spike(series: Series, at: int, size: float = 12.0, readings: int = 2) -> Series:
    series.values[at : at + readings] += size * NOISE_SD
    return series


def with_level_shift(series: Series, at: int, size: float = 8.0) -> Series:
    series.values[at:] += size * NOISE_SD
    return series


def with_slope_change(series: Series, at: int, per_day: float = 0.5) -> Series:
    days = (series.timestamps[at:] - series.timestamps[at]) / 86_400_000_000
    series.values[at:] += per_day * NOISE_SD * days
    return series


def with_flatline(series: Series, at: int, readings: int = 16) -> Series:
    series.values[at : at + readings] = series.values[at - 1]
    return series


def with_noise_burst(series: Series, at: int, readings: int = 24, factor: float = 6.0) -> Series:
    rng = np.random.default_rng(99)
    series.values[at : at + readings] += rng.normal(0, factor * NOISE_SD, readings)
    return series
