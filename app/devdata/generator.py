"""Streaming, vectorised generator of the IoT sensor dataset the service ingests.

Output layout (``out_dir``)::

    bucket/mapping.csv                      sensor_name;sensor_uuid
    bucket/Timeseries/<sub dir>/data_N.csv  ;-delimited readings, ~rows_per_file rows each
    devdata_manifest.json                   spec, totals, per-file variants and time ranges
    ground_truth.json                       planted anomalies

Only ``bucket/`` mirrors the real S3 bucket; the two JSON files are metadata for tests,
benchmarks and anomaly-detection evaluation.

Design, so that ~50M rows fit in a bounded amount of memory and a few minutes:

* All randomness after the per-sensor setup is a counter-based hash of
  ``(seed, stream, sensor, reading number or minute)``. Nothing depends on how time is cut
  into chunks, so ``chunk_days`` only bounds memory and output is byte-identical for any value.
* Time advances in chunks of ``chunk_days``. Per chunk, a (sensors x readings) interval matrix
  is cumsum'ed from each sensor's carried-over next reading time.
* The clean signal is analytic in time (level + drift + daily cycle + cumulative level shifts
  and slope changes), so anomalies apply identically whichever chunk a reading falls into.
* A cheap first pass computes only reading times, which gives the exact row count, file
  boundaries and each file's time range up front; variants (e.g. "files containing the
  October fall-back are naive") and duplicated boundaries are then decided before writing.
* Text is rendered with Arrow compute kernels (format each distinct minute once, ``take`` by
  index, join columns) and the resulting string buffer is written to disk as is.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final, Literal, TypeVar, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from app.devdata.spec import DatasetSpec

TimestampStyle = Literal["offset", "naive"]
AnomalyKind = Literal["spike", "dip", "level_shift", "slope_change", "flatline", "noise_burst"]
ProgressCallback = Callable[[int, int], None]

Int64Array = npt.NDArray[np.int64]
UInt64Array = npt.NDArray[np.uint64]
FloatArray = npt.NDArray[np.float64]
_T = TypeVar("_T")

ANOMALY_KINDS: Final[tuple[AnomalyKind, ...]] = (
    "spike",
    "dip",
    "level_shift",
    "slope_change",
    "flatline",
    "noise_burst",
)
MAGNITUDE_UNITS: Final[dict[AnomalyKind, str]] = {
    "spike": "value offset added to 1-3 consecutive readings (positive)",
    "dip": "value offset added to 1-3 consecutive readings (negative)",
    "level_shift": "step added to every reading from start on",
    "slope_change": "extra slope in value units per day from start on",
    "flatline": "constant value reported from start to end",
    "noise_burst": "factor applied to the noise standard deviation from start to end",
}

BUCKET_DIR_NAME: Final = "bucket"
MANIFEST_NAME: Final = "devdata_manifest.json"
GROUND_TRUTH_NAME: Final = "ground_truth.json"
MAPPING_KEY: Final = "mapping.csv"
DATA_SUBDIRS: Final = (
    "Timeseries/export_a",
    "Timeseries/export_b",
    "Timeseries/export_c",
    "Timeseries/archive/2015",
)
INDEXED_HEADER: Final = b";timestamp;sensor_uuid;sensor_value\n"
PLAIN_HEADER: Final = b"timestamp;sensor_uuid;sensor_value\n"

# Consecutive files cycle through these variants, so any 4 consecutive files show all of them
# and both halves of a small dataset centred on the fall-back contain an offset file.
_VARIANT_CYCLE: Final[tuple[tuple[bool, TimestampStyle], ...]] = (
    (True, "offset"),
    (False, "naive"),
    (False, "offset"),
    (True, "naive"),
)

_MIN_INTERVAL: Final = 5
_MAX_INTERVAL: Final = 30
# Anomalies keep this distance from the span ends (room for the 1-3 readings of a spike,
# which are at most 30 minutes apart) and from each other on the same sensor.
_EVENT_MARGIN_MIN: Final = 3 * 60
_EVENT_GUARD_MIN: Final = 6 * 60
_MINUTES_PER_DAY: Final = 1440
_EPOCH_DATE: Final = date(1970, 1, 1)

# Independent hash streams: changing how one quantity is drawn must not shift the others.
_STREAM_INTERVAL: Final = 1
_STREAM_NOISE: Final = 2
_STREAM_TIEBREAK: Final = 3

_MASK64: Final = (1 << 64) - 1
_GOLDEN: Final = 0x9E3779B97F4A7C15


# --------------------------------------------------------------------------------------------
# Public result types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileVariant:
    index_column: bool
    timestamps: TimestampStyle

    def to_json(self) -> dict[str, Any]:
        return {"index_column": self.index_column, "timestamps": self.timestamps}


@dataclass(frozen=True)
class DataFileInfo:
    """One written data file; ``rows`` includes the ``duplicate_rows`` repeated at its start."""

    key: str
    rows: int
    bytes: int
    duplicate_rows: int
    variant: FileVariant
    first_timestamp_utc: datetime
    last_timestamp_utc: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "rows": self.rows,
            "bytes": self.bytes,
            "duplicate_rows": self.duplicate_rows,
            "variant": self.variant.to_json(),
            "first_timestamp_utc": _iso_utc(self.first_timestamp_utc),
            "last_timestamp_utc": _iso_utc(self.last_timestamp_utc),
        }


@dataclass(frozen=True)
class AnomalyEvent:
    """A planted anomaly; ``start``/``end`` are UTC and inclusive (see MAGNITUDE_UNITS)."""

    sensor_name: str
    sensor_uuid: str
    kind: AnomalyKind
    start: datetime
    end: datetime
    magnitude: float

    def to_json(self) -> dict[str, Any]:
        return {
            "sensor_name": self.sensor_name,
            "sensor_uuid": self.sensor_uuid,
            "kind": self.kind,
            "start": _iso_utc(self.start),
            "end": _iso_utc(self.end),
            "magnitude": self.magnitude,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnomalyEvent:
        kind = data["kind"]
        if kind not in ANOMALY_KINDS:
            raise ValueError(f"unknown anomaly kind {kind!r}")
        return cls(
            sensor_name=str(data["sensor_name"]),
            sensor_uuid=str(data["sensor_uuid"]),
            kind=kind,
            start=datetime.fromisoformat(data["start"]),
            end=datetime.fromisoformat(data["end"]),
            magnitude=float(data["magnitude"]),
        )


@dataclass(frozen=True)
class Manifest:
    spec: DatasetSpec
    out_dir: Path
    bucket_dir: Path
    manifest_path: Path
    ground_truth_path: Path
    rows_written: int
    unique_rows: int
    duplicate_rows: int
    bytes_written: int
    files: tuple[DataFileInfo, ...]
    events: tuple[AnomalyEvent, ...]
    first_timestamp_utc: datetime
    last_timestamp_utc: datetime
    seconds: float

    def bucket_files(self) -> list[tuple[str, Path]]:
        """(S3 key, local path) of mapping.csv and every data file, in file order."""
        keys = [MAPPING_KEY, *(f.key for f in self.files)]
        return [(key, self.bucket_dir / key) for key in keys]

    def to_json(self) -> dict[str, Any]:
        return {
            "generator": "app.devdata",
            "spec": self.spec.to_json(),
            "bucket_dir": BUCKET_DIR_NAME,
            "ground_truth": GROUND_TRUTH_NAME,
            "totals": {
                "rows_written": self.rows_written,
                "unique_rows": self.unique_rows,
                "duplicate_rows": self.duplicate_rows,
                "files": len(self.files),
                "bytes": self.bytes_written,
                "sensors": self.spec.sensors,
                "events": len(self.events),
                "first_timestamp_utc": _iso_utc(self.first_timestamp_utc),
                "last_timestamp_utc": _iso_utc(self.last_timestamp_utc),
                "seconds": round(self.seconds, 3),
            },
            "files": [f.to_json() for f in self.files],
        }


def bucket_dir_of(out_dir: Path) -> Path:
    return Path(out_dir) / BUCKET_DIR_NAME


def list_bucket_files(out_dir: Path) -> list[tuple[str, Path]]:
    """(S3 key, local path) of everything under ``<out_dir>/bucket``, sorted by key."""
    root = bucket_dir_of(out_dir)
    return sorted(
        (path.relative_to(root).as_posix(), path) for path in root.rglob("*") if path.is_file()
    )


def read_ground_truth(out_dir: Path) -> list[AnomalyEvent]:
    data = json.loads((Path(out_dir) / GROUND_TRUTH_NAME).read_text())
    return [AnomalyEvent.from_json(item) for item in data["events"]]


def read_manifest_json(out_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((Path(out_dir) / MANIFEST_NAME).read_text())
    return result


# --------------------------------------------------------------------------------------------
# Counter-based randomness
# --------------------------------------------------------------------------------------------


def _splitmix64_scalar(value: int) -> int:
    value = (value + _GOLDEN) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _sensor_keys(seed: int, stream: int, sensors: int) -> UInt64Array:
    base = _splitmix64_scalar(_splitmix64_scalar(seed & _MASK64) ^ stream)
    return np.array([_splitmix64_scalar(base ^ s) for s in range(sensors)], dtype=np.uint64)


def _hash64(keys: UInt64Array, counters: npt.NDArray[Any]) -> UInt64Array:
    """splitmix64 of key + counter * golden; ``keys`` broadcasts against ``counters``."""
    x = counters.astype(np.uint64)
    x *= np.uint64(_GOLDEN)
    x += keys
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _standard_normal(hashes: UInt64Array) -> FloatArray:
    # Box-Muller from the two 32-bit halves of one hash; u1 in (0, 1] keeps log finite.
    u1 = ((hashes >> np.uint64(32)).astype(np.float64) + 1.0) * 2.0**-32
    u2 = (hashes & np.uint64(0xFFFFFFFF)).astype(np.float64) * 2.0**-32
    result: FloatArray = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return result


def _interval_table() -> npt.NDArray[np.uint8]:
    """Maps a uniform 16-bit hash to 5 + round(25 * Beta(2, 3)) minutes (mean 15).

    Inverting the discrete CDF once is much cheaper than drawing Beta variates per reading.
    """
    span = _MAX_INTERVAL - _MIN_INTERVAL

    def beta23_cdf(x: FloatArray) -> FloatArray:
        x = np.clip(x, 0.0, 1.0)
        cdf: FloatArray = 6 * x**2 - 8 * x**3 + 3 * x**4
        return cdf

    upper_edges = (np.arange(span + 1) + 0.5) / span
    cdf = beta23_cdf(upper_edges)
    cdf[-1] = 1.0
    uniforms = (np.arange(1 << 16) + 0.5) / (1 << 16)
    steps = np.searchsorted(cdf, uniforms, side="right")
    return (steps + _MIN_INTERVAL).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Time zone handling (Europe/Berlin, EU rule: DST from the last Sunday of March 01:00 UTC to
# the last Sunday of October 01:00 UTC). Vectorised over minutes since the Unix epoch.
# --------------------------------------------------------------------------------------------


def _last_sunday_0100_utc(year: int, month: int) -> int:
    last_day = date(year, month, 31)
    sunday = last_day - timedelta(days=(last_day.weekday() + 1) % 7)
    instant = datetime(sunday.year, sunday.month, sunday.day, 1, tzinfo=UTC)
    return int(instant.timestamp()) // 60


@dataclass(frozen=True)
class _BerlinClock:
    transitions: Int64Array  # alternating DST start / DST end, ascending
    fall_backs: Int64Array  # DST end instants

    @classmethod
    def for_range(cls, first_minute: int, last_minute: int) -> _BerlinClock:
        first_year = datetime.fromtimestamp(first_minute * 60, UTC).year - 1
        last_year = datetime.fromtimestamp(last_minute * 60, UTC).year + 1
        transitions: list[int] = []
        for year in range(first_year, last_year + 1):
            transitions += [_last_sunday_0100_utc(year, 3), _last_sunday_0100_utc(year, 10)]
        return cls(
            transitions=np.array(transitions, dtype=np.int64),
            fall_backs=np.array(transitions[1::2], dtype=np.int64),
        )

    def is_dst(self, minutes: Int64Array) -> npt.NDArray[np.bool_]:
        # An odd number of transitions at or before t means DST started but has not ended.
        passed = np.searchsorted(self.transitions, minutes, side="right")
        result: npt.NDArray[np.bool_] = (passed % 2) == 1
        return result

    def ambiguous_windows(self) -> list[tuple[int, int]]:
        """UTC minute ranges [a, b) whose naive wall time is the repeated 02:00-02:59 hour."""
        return [(int(t) - 60, int(t) + 60) for t in self.fall_backs]


# --------------------------------------------------------------------------------------------
# Sensors and anomalies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SensorModel:
    names: list[str]
    uuids: list[str]
    level: FloatArray
    noise_sd: FloatArray
    drift_per_day: FloatArray
    cycle_amplitude: FloatArray
    cycle_phase: FloatArray
    first_offset: Int64Array
    interval_keys: UInt64Array
    noise_keys: UInt64Array
    tiebreak_keys: UInt64Array

    @classmethod
    def create(cls, spec: DatasetSpec, rng: np.random.Generator) -> _SensorModel:
        count = spec.sensors
        names = [f"sensor_{i:05d}" for i in range(count)]
        uuids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(count)]

        level = rng.uniform(-300.0, 300.0, count)
        # Heavy negative tail seen in the real data; always at least one such sensor so even
        # tiny datasets exercise very large magnitudes.
        heavy = rng.choice(count, size=max(1, round(0.05 * count)), replace=False)
        level[heavy] = -(10.0 ** rng.uniform(3.0, 5.5, heavy.size))

        # A small absolute floor keeps sensors near zero from being noise-free.
        noise_sd = np.maximum(0.05, np.abs(level) * rng.uniform(0.01, 0.04, count))
        drifting = rng.random(count) < 0.3
        # A few noise sd per year: visible over months, yet bounded over the 3-year span.
        drift_per_year = rng.choice([-1.0, 1.0], count) * rng.uniform(1.0, 4.0, count) * noise_sd
        drift_per_day = np.where(drifting, drift_per_year / 365.0, 0.0)
        cycling = rng.random(count) < 0.4
        cycle_amplitude = np.where(cycling, rng.uniform(0.5, 2.0, count) * noise_sd, 0.0)
        cycle_phase = rng.uniform(0.0, 2 * np.pi, count)

        first_offset = rng.integers(0, _MAX_INTERVAL, count, dtype=np.int64)
        # The earliest sensor reports exactly at spec.start (e.g. 23:53 for the real dataset).
        first_offset -= first_offset.min()
        return cls(
            names=names,
            uuids=uuids,
            level=level,
            noise_sd=noise_sd,
            drift_per_day=drift_per_day,
            cycle_amplitude=cycle_amplitude,
            cycle_phase=cycle_phase,
            first_offset=first_offset,
            interval_keys=_sensor_keys(spec.seed, _STREAM_INTERVAL, count),
            noise_keys=_sensor_keys(spec.seed, _STREAM_NOISE, count),
            tiebreak_keys=_sensor_keys(spec.seed, _STREAM_TIEBREAK, count),
        )


@dataclass
class _PlannedEvent:
    """Event in minutes since the epoch; spikes/dips resolve their readings while writing."""

    sensor: int
    kind: AnomalyKind
    start: int
    end: int
    magnitude: float
    readings: int = 0  # spike/dip: readings still to modify
    first_hit: int | None = None
    last_hit: int | None = None


@dataclass(frozen=True)
class _EventIndex:
    persistent: list[_PlannedEvent]  # level_shift, slope_change
    windowed: list[_PlannedEvent]  # flatline, noise_burst (fixed [start, end])
    point: list[_PlannedEvent]  # spike, dip (first N readings at/after start)
    all: list[_PlannedEvent]


def _plan_events(
    spec: DatasetSpec,
    model: _SensorModel,
    rng: np.random.Generator,
    start_minute: int,
    end_minute: int,
    time_origin: int,
) -> _EventIndex:
    occupied: dict[int, list[tuple[int, int]]] = {}
    planned: list[_PlannedEvent] = []
    for kind in ANOMALY_KINDS:
        for ordinal in range(spec.events_per_kind):
            event = _place_event(
                kind, ordinal, spec, model, rng, start_minute, end_minute, occupied
            )
            if event is not None:
                planned.append(event)
    persistent = [e for e in planned if e.kind in ("level_shift", "slope_change")]
    for event in planned:
        if event.kind == "flatline":
            # The stuck value is the clean signal at the start: deterministic, and plausible
            # for a sensor that froze its last good reading.
            value = _clean_signal(
                model,
                persistent,
                np.array([event.sensor]),
                np.array([event.start], dtype=np.int64),
                time_origin,
            )
            event.magnitude = float(value[0])
    return _EventIndex(
        persistent=persistent,
        windowed=[e for e in planned if e.kind in ("flatline", "noise_burst")],
        point=[e for e in planned if e.kind in ("spike", "dip")],
        all=planned,
    )


def _place_event(
    kind: AnomalyKind,
    ordinal: int,
    spec: DatasetSpec,
    model: _SensorModel,
    rng: np.random.Generator,
    start_minute: int,
    end_minute: int,
    occupied: dict[int, list[tuple[int, int]]],
) -> _PlannedEvent | None:
    hour = 60
    duration = 0
    if kind == "flatline":
        duration = int(rng.integers(2 * hour, 12 * hour + 1))
    elif kind == "noise_burst":
        duration = int(rng.integers(2 * hour, 8 * hour + 1))
    earliest = start_minute + _EVENT_MARGIN_MIN
    latest = end_minute - _EVENT_MARGIN_MIN - duration
    if latest <= earliest:
        return None
    # Rejection sampling keeps events on one sensor apart so their effects never overlap;
    # datasets are large compared with the number of events, so this converges quickly.
    for _ in range(1000):
        sensor = int(rng.integers(spec.sensors))
        begin = int(rng.integers(earliest, latest))
        guarded = (begin - _EVENT_GUARD_MIN, begin + duration + _EVENT_GUARD_MIN)
        taken = occupied.setdefault(sensor, [])
        if any(a < guarded[1] and guarded[0] < b for a, b in taken):
            continue
        taken.append(guarded)
        sd = float(model.noise_sd[sensor])
        sign = 1.0 if rng.random() < 0.5 else -1.0
        if kind in ("spike", "dip"):
            # Cycle the run length 1-3 (first spike 2 readings, first dip 3) rather than
            # drawing it, so even a dataset with one event per kind has multi-reading runs.
            readings = 1 + (ordinal + (1 if kind == "spike" else 2)) % 3
            magnitude = (1.0 if kind == "spike" else -1.0) * float(rng.uniform(8, 15)) * sd
            return _PlannedEvent(sensor, kind, begin, begin, magnitude, readings)
        if kind == "level_shift":
            magnitude = sign * float(rng.uniform(5, 20)) * sd
            return _PlannedEvent(sensor, kind, begin, end_minute, magnitude)
        if kind == "slope_change":
            # 0.5-2 sd per day, flattened for early events in long spans so the total change
            # stays within ~14 sd instead of running away over years.
            remaining_days = (end_minute - begin) / _MINUTES_PER_DAY
            damping = min(1.0, 7.0 / remaining_days)
            magnitude = sign * float(rng.uniform(0.5, 2)) * sd * damping
            return _PlannedEvent(sensor, kind, begin, end_minute, magnitude)
        if kind == "flatline":
            # Magnitude (the stuck value) is filled in once all level/slope changes are known.
            return _PlannedEvent(sensor, kind, begin, begin + duration, math.nan)
        return _PlannedEvent(sensor, kind, begin, begin + duration, float(rng.uniform(5, 10)))
    return None


def _clean_signal(
    model: _SensorModel,
    persistent: list[_PlannedEvent],
    sensors: npt.NDArray[np.integer[Any]],
    minutes: Int64Array,
    time_origin: int,
) -> FloatArray:
    """Noise-free value of ``sensors`` at ``minutes``: a pure function of time."""
    days = (minutes - time_origin) / _MINUTES_PER_DAY
    phase = 2 * np.pi * (minutes % _MINUTES_PER_DAY) / _MINUTES_PER_DAY
    values: FloatArray = (
        model.level[sensors]
        + model.drift_per_day[sensors] * days
        + model.cycle_amplitude[sensors] * np.sin(phase + model.cycle_phase[sensors])
    )
    for event in persistent:
        own = sensors == event.sensor
        values[own] += _persistent_effect(event, minutes[own])
    return values


def _persistent_effect(event: _PlannedEvent, minutes: Int64Array) -> FloatArray:
    """What a level shift or slope change adds at ``minutes`` (zero before it starts)."""
    elapsed = minutes - event.start
    if event.kind == "level_shift":
        step: FloatArray = np.where(elapsed >= 0, event.magnitude, 0.0)
        return step
    ramp: FloatArray = event.magnitude * np.maximum(elapsed, 0) / _MINUTES_PER_DAY
    return ramp


# --------------------------------------------------------------------------------------------
# Reading times
# --------------------------------------------------------------------------------------------


@dataclass
class _ClockState:
    """Per-sensor carry-over between chunks: time and sequence number of the next reading."""

    next_minute: Int64Array
    reading_number: Int64Array


@dataclass(frozen=True)
class _ChunkReadings:
    sensors: npt.NDArray[np.int32]  # grouped by sensor, each group in time order
    minutes: Int64Array
    group_offsets: Int64Array  # sensor s occupies [group_offsets[s], group_offsets[s + 1])


def _chunk_readings(
    state: _ClockState,
    model: _SensorModel,
    table: npt.NDArray[np.uint8],
    chunk_end: int,
) -> _ChunkReadings:
    """Readings of all sensors before ``chunk_end``; advances ``state`` past them."""
    sensors = state.next_minute.size
    span = int(max(0, chunk_end - int(state.next_minute.min())))
    # Enough columns for the mean interval plus slack; extended in the rare case a sensor
    # draws many short intervals and has not passed chunk_end yet.
    columns = span // 12 + 8
    while True:
        counters = state.reading_number[:, None] + np.arange(columns, dtype=np.int64)[None, :]
        hashes = _hash64(model.interval_keys[:, None], counters)
        intervals = table[(hashes >> np.uint64(48)).astype(np.intp)].astype(np.int64)
        times = np.empty((sensors, columns), dtype=np.int64)
        times[:, 0] = state.next_minute
        np.cumsum(intervals[:, :-1], axis=1, out=times[:, 1:])
        times[:, 1:] += state.next_minute[:, None]
        if bool((times[:, -1] >= chunk_end).all()):
            break
        columns = columns * 3 // 2 + 8
    valid = times < chunk_end
    counts = valid.sum(axis=1)
    state.next_minute = times[np.arange(sensors), counts]
    state.reading_number = state.reading_number + counts
    offsets = np.zeros(sensors + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return _ChunkReadings(
        sensors=np.repeat(np.arange(sensors, dtype=np.int32), counts),
        minutes=times[valid],
        group_offsets=offsets,
    )


def _chunk_ends(start_minute: int, end_minute: int, step: int) -> Iterator[int]:
    boundary = start_minute
    while boundary < end_minute:
        boundary = min(boundary + step, end_minute)
        yield boundary


# --------------------------------------------------------------------------------------------
# File plan (first pass)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FilePlan:
    number: int
    key: str
    variant: FileVariant
    first_row: int  # global row index in the de-duplicated, time-sorted stream
    end_row: int
    first_minute: int
    last_minute: int
    duplicate_rows: int  # rows repeated from the previous file at the start
    duplicate_tail: int  # rows of this file repeated at the start of the next one


def _plan_files(
    spec: DatasetSpec,
    model: _SensorModel,
    table: npt.NDArray[np.uint8],
    start_minute: int,
    end_minute: int,
    clock: _BerlinClock,
) -> list[_FilePlan]:
    """Dry run over reading times only, to fix file boundaries and variants up front."""
    state = _ClockState(start_minute + model.first_offset, np.zeros(spec.sensors, np.int64))
    # Minute of every row that starts or ends a file, found from per-minute histograms.
    boundary_minutes: dict[int, int] = {}
    rows_before = 0
    chunk_start = start_minute
    for chunk_end in _chunk_ends(start_minute, end_minute, spec.chunk_minutes):
        readings = _chunk_readings(state, model, table, chunk_end)
        rows = readings.minutes.size
        if rows:
            per_minute = np.bincount(readings.minutes - chunk_start)
            rows_through_minute = np.cumsum(per_minute)
            first_file = rows_before // spec.rows_per_file
            last_file = (rows_before + rows - 1) // spec.rows_per_file
            for file_number in range(first_file, last_file + 2):
                for row in (file_number * spec.rows_per_file - 1, file_number * spec.rows_per_file):
                    local = row - rows_before
                    if 0 <= local < rows:
                        offset = int(np.searchsorted(rows_through_minute, local, side="right"))
                        boundary_minutes[row] = chunk_start + offset
            boundary_minutes[rows_before + rows - 1] = int(readings.minutes.max())
        rows_before += rows
        chunk_start = chunk_end
    total_rows = rows_before
    if total_rows == 0:
        return []

    file_count = math.ceil(total_rows / spec.rows_per_file)
    duplicated = _duplicated_boundaries(spec, file_count)
    ambiguous = clock.ambiguous_windows()
    plans: list[_FilePlan] = []
    for number in range(file_count):
        first_row = number * spec.rows_per_file
        end_row = min(total_rows, first_row + spec.rows_per_file)
        first_minute = boundary_minutes[first_row]
        last_minute = boundary_minutes[end_row - 1]
        index_column, style = _VARIANT_CYCLE[number % len(_VARIANT_CYCLE)]
        # Files spanning a fall-back must be naive: that is how the repeated wall-clock hour
        # shows up in the real data.
        if any(a <= last_minute and first_minute < b for a, b in ambiguous):
            style = "naive"
        plans.append(
            _FilePlan(
                number=number,
                key=f"{DATA_SUBDIRS[number % len(DATA_SUBDIRS)]}/data_{number}.csv",
                variant=FileVariant(index_column=index_column, timestamps=style),
                first_row=first_row,
                end_row=end_row,
                first_minute=first_minute,
                last_minute=last_minute,
                duplicate_rows=spec.duplicate_rows if number - 1 in duplicated else 0,
                duplicate_tail=spec.duplicate_rows if number in duplicated else 0,
            )
        )
    return plans


def _duplicated_boundaries(spec: DatasetSpec, file_count: int) -> set[int]:
    """File numbers whose tail is repeated in the next file, spread evenly over the dataset."""
    boundaries = file_count - 1
    wanted = min(spec.duplicate_boundaries, boundaries)
    if wanted == 0 or spec.duplicate_rows == 0:
        return set()
    positions = np.linspace(0, boundaries - 1, wanted + 2)[1:-1]
    chosen = {int(p) for p in np.round(positions)}
    # Rounding can merge neighbours; top up with the remaining boundaries in order.
    for candidate in range(boundaries):
        if len(chosen) >= wanted:
            break
        chosen.add(candidate)
    return chosen


# --------------------------------------------------------------------------------------------
# Rendering and writing (second pass)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    sensors: npt.NDArray[np.int32]
    minutes: Int64Array
    values: FloatArray

    def slice(self, begin: int, end: int) -> _Rows:
        return _Rows(self.sensors[begin:end], self.minutes[begin:end], self.values[begin:end])

    def __len__(self) -> int:
        return int(self.minutes.size)


@dataclass(frozen=True)
class _RenderContext:
    clock: _BerlinClock
    uuid_cells: Any  # StringArray "uuid;" per sensor
    index_cells: Any  # StringArray "0;", "1;", ... up to the longest file
    time_of_day_cells: Any  # StringArray "00:00:00" .. "23:59:00"

    @classmethod
    def create(cls, clock: _BerlinClock, uuids: list[str], longest_file: int) -> _RenderContext:
        return cls(
            clock=clock,
            uuid_cells=pa.array([f"{u};" for u in uuids]),
            index_cells=pc.binary_join_element_wise(
                pa.array(np.arange(longest_file)).cast(pa.string()), ";", ""
            ),
            time_of_day_cells=pa.array(
                [f"{m // 60:02d}:{m % 60:02d}:00" for m in range(_MINUTES_PER_DAY)]
            ),
        )


def _format_minutes(minutes: Int64Array, style: TimestampStyle, ctx: _RenderContext) -> Any:
    """Render UTC minutes as Berlin wall time plus a trailing ';' (pyarrow StringArray).

    Assembled from per-day date strings and a 1440-entry time-of-day table rather than
    Arrow's strftime/timestamp cast, whose first call loads the time zone database (>1 s).
    """
    dst = ctx.clock.is_dst(minutes)
    wall = minutes + np.where(dst, 120, 60)
    wall_day = wall // _MINUTES_PER_DAY
    first_day = int(wall_day.min())
    dates = [
        f"{_EPOCH_DATE + timedelta(days=day)} " for day in range(first_day, int(wall_day.max()) + 1)
    ]
    date_part = pa.array(dates).take(pa.array(wall_day - first_day))
    time_part = ctx.time_of_day_cells.take(pa.array(wall % _MINUTES_PER_DAY))
    suffix = pc.if_else(pa.array(dst), "+02:00;", "+01:00;") if style == "offset" else ";"
    return pc.binary_join_element_wise(date_part, time_part, suffix, "")


def _render(
    rows: _Rows, style: TimestampStyle, index_start: int | None, ctx: _RenderContext
) -> Any:
    """One StringArray element per CSV line (each ends with a newline)."""
    minutes = rows.minutes
    # Rows are time-sorted, so distinct minutes are runs: format each once and take().
    new_minute = np.empty(minutes.size, dtype=bool)
    new_minute[:1] = True
    np.not_equal(minutes[1:], minutes[:-1], out=new_minute[1:])
    distinct = minutes[new_minute]
    run_index = np.cumsum(new_minute) - 1
    columns = [
        _format_minutes(distinct, style, ctx).take(pa.array(run_index)),
        ctx.uuid_cells.take(pa.array(rows.sensors)),
        # Arrow's float->string cast is shortest round-trip, like Python's repr.
        pa.array(rows.values).cast(pa.string()),
        "\n",
    ]
    if index_start is not None:
        columns.insert(0, ctx.index_cells.slice(index_start, len(rows)))
    return pc.binary_join_element_wise(*columns, "")


def _write_lines(handle: IO[bytes], lines: Any) -> int:
    if len(lines) == 0:
        return 0
    _, offsets_buffer, data_buffer = lines.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=lines.offset + len(lines) + 1)
    begin = int(offsets[lines.offset])
    end = int(offsets[lines.offset + len(lines)])
    return handle.write(memoryview(data_buffer)[begin:end])


@dataclass
class _OpenFile:
    plan: _FilePlan
    handle: IO[bytes]
    rows: int = 0
    bytes: int = 0
    first_minute: int | None = None
    last_minute: int | None = None

    def write(self, rows: _Rows, ctx: _RenderContext) -> int:
        if not len(rows):
            return 0
        variant = self.plan.variant
        index_start = self.rows if variant.index_column else None
        written = _write_lines(self.handle, _render(rows, variant.timestamps, index_start, ctx))
        if self.first_minute is None:
            self.first_minute = int(rows.minutes[0])
        self.last_minute = int(rows.minutes[-1])
        self.rows += len(rows)
        self.bytes += written
        return written

    def close(self) -> DataFileInfo:
        self.handle.close()
        if self.first_minute is None or self.last_minute is None:
            raise RuntimeError(f"{self.plan.key} was closed without rows")
        return DataFileInfo(
            key=self.plan.key,
            rows=self.rows,
            bytes=self.bytes,
            duplicate_rows=self.plan.duplicate_rows,
            variant=self.plan.variant,
            first_timestamp_utc=_minute_to_datetime(self.first_minute),
            last_timestamp_utc=_minute_to_datetime(self.last_minute),
        )


class _BucketWriter:
    """Cuts the time-sorted row stream into the planned files, repeating duplicated tails."""

    def __init__(
        self,
        bucket: Path,
        plans: list[_FilePlan],
        rows_per_file: int,
        ctx: _RenderContext,
        *,
        bytes_written: int = 0,
    ) -> None:
        self._bucket = bucket
        self._plans = plans
        self._rows_per_file = rows_per_file
        self._ctx = ctx
        self._current: _OpenFile | None = None
        self._carried_tail: _Rows | None = None  # end of the current file, for the next one
        self._finished: list[DataFileInfo] = []
        self._stream_rows = 0  # rows of the de-duplicated stream consumed so far
        self.rows_written = 0
        self.bytes_written = bytes_written

    def write(self, rows: _Rows) -> None:
        begin = 0
        while begin < len(rows):
            plan = self._plans[(self._stream_rows + begin) // self._rows_per_file]
            current = self._current
            if current is None or current.plan.number != plan.number:
                current = self._open(plan)
            end = min(len(rows), plan.end_row - self._stream_rows)
            segment = rows.slice(begin, end)
            self._count(current.write(segment, self._ctx), len(segment))
            self._carried_tail = _collect_tail(
                self._carried_tail, segment, self._stream_rows + begin, plan
            )
            begin = end
        self._stream_rows += len(rows)

    def close(self) -> list[DataFileInfo]:
        if self._current is not None:
            if self._current.rows:
                self._finished.append(self._current.close())
            else:
                self._current.handle.close()
            self._current = None
        return self._finished

    def _open(self, plan: _FilePlan) -> _OpenFile:
        if self._current is not None:
            self._finished.append(self._current.close())
        opened = _OpenFile(plan, (self._bucket / plan.key).open("wb"))
        self._current = opened
        header = INDEXED_HEADER if plan.variant.index_column else PLAIN_HEADER
        opened.bytes += opened.handle.write(header)
        self._count(len(header), 0)
        if plan.duplicate_rows and self._carried_tail is not None:
            tail = self._carried_tail
            self._count(opened.write(tail, self._ctx), len(tail))
        self._carried_tail = None
        return opened

    def _count(self, num_bytes: int, rows: int) -> None:
        self.bytes_written += num_bytes
        self.rows_written += rows


def _chunk_values(
    readings: _ChunkReadings,
    model: _SensorModel,
    events: _EventIndex,
    time_origin: int,
) -> FloatArray:
    sensors, minutes = readings.sensors, readings.minutes
    values = _clean_signal(model, [], sensors, minutes, time_origin)
    noise_scale = model.noise_sd[sensors]
    # Readings are grouped per sensor, so each event touches one contiguous slice.
    for event in events.persistent:
        group = _group(readings, event.sensor)
        values[group] += _persistent_effect(event, minutes[group])
    for event in events.windowed:
        if event.kind == "noise_burst":
            group = _group(readings, event.sensor)
            inside = (minutes[group] >= event.start) & (minutes[group] <= event.end)
            noise_scale[group][inside] *= event.magnitude
    noise = _standard_normal(_hash64(model.noise_keys[sensors], minutes))
    values += noise_scale * noise
    for event in events.point:
        if event.readings <= 0:
            continue
        group = _group(readings, event.sensor)
        group_minutes = minutes[group]
        first = int(np.searchsorted(group_minutes, event.start, side="left"))
        hit = slice(first, min(group_minutes.size, first + event.readings))
        hit_count = hit.stop - hit.start
        if hit_count <= 0:
            continue
        values[group][hit] += event.magnitude
        if event.first_hit is None:
            event.first_hit = int(group_minutes[hit.start])
        event.last_hit = int(group_minutes[hit.stop - 1])
        event.readings -= hit_count
    for event in events.windowed:
        if event.kind == "flatline":
            group = _group(readings, event.sensor)
            inside = (minutes[group] >= event.start) & (minutes[group] <= event.end)
            values[group][inside] = event.magnitude
    return values


def _group(readings: _ChunkReadings, sensor: int) -> slice:
    return slice(int(readings.group_offsets[sensor]), int(readings.group_offsets[sensor + 1]))


def _interleave(
    readings: _ChunkReadings, values: FloatArray, model: _SensorModel, chunk_start: int
) -> _Rows:
    """Sort by minute, with a hashed tiebreak so sensors appear in random order per minute."""
    tiebreak = _hash64(model.tiebreak_keys[readings.sensors], readings.minutes) >> np.uint64(40)
    sort_key = ((readings.minutes - chunk_start) << 24) | tiebreak.astype(np.int64)
    order = np.argsort(sort_key, kind="stable")
    return _Rows(readings.sensors[order], readings.minutes[order], values[order])


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def generate_dataset(
    spec: DatasetSpec,
    out_dir: Path | str,
    progress: ProgressCallback | None = None,
    *,
    overwrite: bool = False,
) -> Manifest:
    """Write the dataset described by ``spec`` under ``out_dir`` and return its manifest.

    ``progress`` is called with (bytes_written, rows_written) after every chunk. An existing
    ``<out_dir>/bucket`` is only replaced when ``overwrite`` is true, so a stray ``--out``
    never silently deletes data.
    """
    started = time.perf_counter()
    out_path = Path(out_dir)
    bucket = bucket_dir_of(out_path)
    manifest_path = out_path / MANIFEST_NAME
    ground_truth_path = out_path / GROUND_TRUTH_NAME
    if bucket.exists() and any(bucket.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{bucket} is not empty; refusing to overwrite it")
        shutil.rmtree(bucket)
    # Remove the manifest first: its presence marks a complete dataset.
    manifest_path.unlink(missing_ok=True)
    ground_truth_path.unlink(missing_ok=True)
    for subdir in DATA_SUBDIRS:
        (bucket / subdir).mkdir(parents=True, exist_ok=True)

    setup_rng = np.random.default_rng(spec.seed)
    model = _SensorModel.create(spec, setup_rng)
    start_minute = int(spec.start.timestamp()) // 60
    end_minute = int(spec.end.timestamp()) // 60
    clock = _BerlinClock.for_range(start_minute, end_minute)
    table = _interval_table()
    events = _plan_events(spec, model, setup_rng, start_minute, end_minute, start_minute)

    mapping_bytes = _write_mapping(bucket / "mapping.csv", model)
    plans = _plan_files(spec, model, table, start_minute, end_minute, clock)
    longest_file = spec.rows_per_file + spec.duplicate_rows
    ctx = _RenderContext.create(clock, model.uuids, longest_file)

    writer = _BucketWriter(bucket, plans, spec.rows_per_file, ctx, bytes_written=mapping_bytes)
    chunks = _time_sorted_chunks(spec, model, table, events, start_minute, end_minute)
    try:
        for rows in _prefetched(chunks):
            writer.write(rows)
            if progress is not None:
                progress(writer.bytes_written, writer.rows_written)
    finally:
        infos = writer.close()

    ground_truth = _resolve_events(events, model)
    duplicate_rows = sum(info.duplicate_rows for info in infos)
    manifest = Manifest(
        spec=spec,
        out_dir=out_path,
        bucket_dir=bucket,
        manifest_path=manifest_path,
        ground_truth_path=ground_truth_path,
        rows_written=writer.rows_written,
        unique_rows=writer.rows_written - duplicate_rows,
        duplicate_rows=duplicate_rows,
        bytes_written=writer.bytes_written,
        files=tuple(infos),
        events=tuple(ground_truth),
        first_timestamp_utc=_minute_to_datetime(plans[0].first_minute if plans else start_minute),
        last_timestamp_utc=_minute_to_datetime(plans[-1].last_minute if plans else start_minute),
        seconds=time.perf_counter() - started,
    )
    ground_truth_path.write_text(
        json.dumps(
            {
                "seed": spec.seed,
                "magnitude_units": MAGNITUDE_UNITS,
                "events": [event.to_json() for event in ground_truth],
            },
            indent=1,
        )
    )
    manifest_path.write_text(json.dumps(manifest.to_json(), indent=1))
    return manifest


def _time_sorted_chunks(
    spec: DatasetSpec,
    model: _SensorModel,
    table: npt.NDArray[np.uint8],
    events: _EventIndex,
    start_minute: int,
    end_minute: int,
) -> Iterator[_Rows]:
    """All readings with their values, chunk by chunk, in global (time, tiebreak) order."""
    state = _ClockState(start_minute + model.first_offset, np.zeros(spec.sensors, np.int64))
    chunk_start = start_minute
    for chunk_end in _chunk_ends(start_minute, end_minute, spec.chunk_minutes):
        readings = _chunk_readings(state, model, table, chunk_end)
        values = _chunk_values(readings, model, events, time_origin=start_minute)
        yield _interleave(readings, values, model, chunk_start)
        chunk_start = chunk_end


def _prefetched(items: Iterator[_T]) -> Iterator[_T]:
    """Compute the next item in a worker thread while the caller consumes the current one.

    NumPy and Arrow release the GIL in their kernels, so computing chunk k+1 overlaps with
    rendering and writing chunk k on a second core. Items are still produced strictly in
    order by one thread, which the stateful chunk generator requires.
    """
    done = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="devdata-chunks") as pool:
        pending = pool.submit(next, items, done)
        while True:
            item = pending.result()
            if item is done:
                return
            pending = pool.submit(next, items, done)
            yield cast(_T, item)


def _collect_tail(
    carried: _Rows | None, segment: _Rows, first_row: int, plan: _FilePlan
) -> _Rows | None:
    """Keep the rows of ``plan`` that the next file repeats (they may span chunks)."""
    if not plan.duplicate_tail:
        return None
    tail_start = plan.end_row - plan.duplicate_tail
    local_start = max(0, tail_start - first_row)
    if local_start >= len(segment):
        return carried
    piece = segment.slice(local_start, len(segment))
    if carried is None:
        return piece
    return _Rows(
        np.concatenate([carried.sensors, piece.sensors]),
        np.concatenate([carried.minutes, piece.minutes]),
        np.concatenate([carried.values, piece.values]),
    )


def _resolve_events(events: _EventIndex, model: _SensorModel) -> list[AnomalyEvent]:
    resolved: list[AnomalyEvent] = []
    for event in events.all:
        start, end = event.start, event.end
        if event.kind in ("spike", "dip"):
            if event.first_hit is None or event.last_hit is None:
                continue  # no reading fell after the planned start (cannot happen with margins)
            start, end = event.first_hit, event.last_hit
        resolved.append(
            AnomalyEvent(
                sensor_name=model.names[event.sensor],
                sensor_uuid=model.uuids[event.sensor],
                kind=event.kind,
                start=_minute_to_datetime(start),
                end=_minute_to_datetime(end),
                magnitude=event.magnitude,
            )
        )
    resolved.sort(key=lambda e: (e.start, e.sensor_name, e.kind))
    return resolved


def _write_mapping(path: Path, model: _SensorModel) -> int:
    lines = ["sensor_name;sensor_uuid"]
    lines += [f"{name};{uid}" for name, uid in zip(model.names, model.uuids, strict=True)]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(data)
    return len(data)


def _minute_to_datetime(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, UTC)


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
