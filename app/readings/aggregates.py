"""Calendar-aligned aggregates of one sensor's readings, computed by PostgreSQL.

Two kinds of bucket:

* Fixed-length buckets (minutes dividing an hour, and ``1h``) are exact stretches of absolute
  time, aligned so that they start on a local wall-clock boundary: with the UTC offset in force
  at ``start`` (``:00``/``:15`` ... local). In the October fall-back hour this gives two distinct
  hourly buckets that both read 02:00 on the wall clock. The alignment is that of ``start``'s
  offset; a zone whose offset changes by less than the bucket length (Lord Howe's 30-minute DST)
  would see its hourly buckets move to :30 local after the change.
* Calendar buckets (``2h``..``12h``, ``1d``, ``1w``, ``Nmo``) are periods of the local wall
  clock: a reading belongs to the period its local time falls in. A Berlin day is 23 h on the
  March DST day and 25 h on the October one; a ``6h`` bucket starts at 00/06/12/18 local and may
  last 5 h or 7 h. Weeks start on Monday, months on the 1st, multi-month buckets on January.

Both storage paths group by the same bucket key, computed with the same arithmetic:

* fixed: ``date_bin(width, ts, origin)`` on PostgreSQL, ``time_bucket(width, ts, origin =>
  origin)`` on TimescaleDB. Both are ``origin + floor((ts - origin) / width) * width`` for a
  width without months, and the query only reads ``ts >= origin``, so the edge case where the
  two historically disagreed (``ts`` before ``origin``) never arises.
* calendar: the key is the *wall-clock label* ``ts AT TIME ZONE zone`` (a ``timestamp`` without
  time zone; the conversion of an instant to local time is unambiguous) floored to the period:
  ``date_bin`` (or month arithmetic) on PostgreSQL, ``time_bucket(width, ts AT TIME ZONE zone,
  origin => label)`` on TimescaleDB, i.e. the inner half of ``time_bucket(..., timezone =>
  zone)``. We do not use the outer half, which converts the label back to an instant, nor
  ``date_trunc(unit, ts, zone)``, which does the same: for an ambiguous label (a ``2h`` bucket at
  Berlin's repeated 02:00) PostgreSQL picks the later instant, and readings from the first 02:xx
  would sit in a bucket that starts after them. Labels are turned into instants once, here in
  Python, as the first instant whose wall clock reaches the label, for both storage paths.

The bucket grid is generated in Python (cost: number of buckets, capped at ``MAX_BUCKETS``),
PostgreSQL returns one row per non-empty bucket, and the filling runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, TypeAlias
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import numpy as np

from app.core.db import Connection

STORAGE_TIMESCALEDB = "timescaledb-hypertable"
STORAGE_POSTGRESQL = "postgresql-partitioned"

# A grid larger than this is a mistake (a year of minutes is 525,600 buckets), and building it,
# filling it and serialising it would hold a worker for seconds.
MAX_BUCKETS = 100_000

IntervalUnit: TypeAlias = Literal["m", "h", "d", "w", "mo"]
StatValue: TypeAlias = float | int | None


class Stat(StrEnum):
    COUNT = "count"
    MIN = "min"
    MAX = "max"
    AVG = "avg"
    STDDEV = "stddev"
    P25 = "p25"
    MEDIAN = "median"
    P75 = "p75"


class Fill(StrEnum):
    NONE = "none"
    NULL = "null"
    PREVIOUS = "previous"
    LINEAR = "linear"


# Amounts that tile the next larger calendar unit, so that every bucket starts on a boundary of
# that unit: minutes tile an hour, hours a day, months a year. Days and weeks have no larger unit
# they tile (a month is not a whole number of weeks), so only 1 of them is allowed.
ALLOWED_AMOUNTS: dict[str, tuple[int, ...]] = {
    "m": (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30),
    "h": (1, 2, 3, 4, 6, 8, 12),
    "d": (1,),
    "w": (1,),
    "mo": (1, 2, 3, 4, 6, 12),
}
_UNIT_HINTS = {
    "m": "minutes must divide an hour; multiples of 60 are read as hours",
    "h": "hours must divide a day; use '1d' for a day",
    "d": "only '1d' is supported; use '1w' for a week",
    "w": "only '1w' is supported; use months for longer periods",
    "mo": "months must divide a year, e.g. '3mo' for quarters, '12mo' for a year",
}
_INTERVAL_PATTERN = re.compile(r"(?P<amount>\d{1,6})(?P<unit>mo|m|h|d|w)")


@dataclass(frozen=True)
class Interval:
    amount: int
    unit: IntervalUnit

    def __post_init__(self) -> None:
        allowed = ALLOWED_AMOUNTS.get(self.unit)
        if allowed is None:
            raise ValueError(f"unknown interval unit {self.unit!r}; use m, h, d, w or mo")
        if self.amount not in allowed:
            listed = ", ".join(f"{amount}{self.unit}" for amount in allowed)
            raise ValueError(
                f"unsupported interval {self.amount}{self.unit}: {_UNIT_HINTS[self.unit]} "
                f"(allowed: {listed})"
            )

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"

    @property
    def is_fixed_length(self) -> bool:
        """Exact stretches of absolute time (up to an hour) rather than wall-clock periods."""
        return self.unit == "m" or (self.unit == "h" and self.amount == 1)

    @property
    def sql_width(self) -> str:
        """The width as PostgreSQL interval text."""
        names = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks", "mo": "months"}
        return f"{self.amount} {names[self.unit]}"

    @property
    def wall_clock_width(self) -> timedelta:
        """The nominal width of a sub-month bucket on the wall clock."""
        per_unit = {
            "m": timedelta(minutes=1),
            "h": timedelta(hours=1),
            "d": timedelta(days=1),
            "w": timedelta(weeks=1),
        }
        return self.amount * per_unit[self.unit]


def parse_interval(text: str) -> Interval:
    """``"15m"``, ``"1h"``, ``"6h"``, ``"1d"``, ``"1w"``, ``"1mo"`` ... into an Interval.

    Rules: a positive whole number and a unit, no spaces; minutes must divide an hour, and a
    multiple of 60 minutes is read as hours; hours must divide a day; days and weeks only 1;
    months must divide a year (buckets then start in January). Anything else is a ValueError.
    """
    match = _INTERVAL_PATTERN.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"invalid interval {text!r}: expected a whole number and a unit "
            "(m, h, d, w, mo), e.g. '15m', '1h', '1d', '1w', '1mo'"
        )
    amount = int(match["amount"])
    unit: IntervalUnit = match["unit"]  # type: ignore[assignment]
    if amount == 0:
        raise ValueError(f"invalid interval {text!r}: the amount must be positive")
    if unit == "m" and amount % 60 == 0:
        amount, unit = amount // 60, "h"
    return Interval(amount, unit)


@dataclass(frozen=True)
class Bucket:
    start: datetime
    end: datetime
    values: dict[str, StatValue]
    filled: bool


# --- SQL -----------------------------------------------------------------------------------
# Every fragment below is a constant chosen by enum lookup; no caller text reaches the SQL.

_STAT_SQL: dict[Stat, str] = {
    Stat.COUNT: "count(*)",
    Stat.MIN: "min(value)",
    Stat.MAX: "max(value)",
    Stat.AVG: "avg(value)",
    Stat.STDDEV: "stddev_samp(value)",
    Stat.P25: "percentile_cont(0.25) WITHIN GROUP (ORDER BY value)",
    Stat.MEDIAN: "percentile_cont(0.5) WITHIN GROUP (ORDER BY value)",
    Stat.P75: "percentile_cont(0.75) WITHIN GROUP (ORDER BY value)",
}

# Parameters: $1 sensor, $2 first bucket start, $3 end, $4 width (interval text), $5 origin
# (timestamptz for fixed buckets, the first wall-clock label for calendar ones), $6 zone name.
_MONTHS_OF = "(extract(year FROM {0}) * 12 + extract(month FROM {0}))::int"
_PLAIN_MONTH_BUCKET = (
    "$5::timestamp + make_interval(months => "
    f"({_MONTHS_OF.format('local_ts')} - {_MONTHS_OF.format('$5::timestamp')})"
    f" / {_MONTHS_OF.format('$4::text::interval')}"
    f" * {_MONTHS_OF.format('$4::text::interval')})"
)
_TIMESCALE_FIXED = "time_bucket($4::text::interval, ts, origin => $5::timestamptz)"
_TIMESCALE_WALL = "time_bucket($4::text::interval, local_ts, origin => $5::timestamp)"
_BUCKET_SQL: dict[tuple[str, str], str] = {
    (STORAGE_POSTGRESQL, "fixed"): "date_bin($4::text::interval, ts, $5::timestamptz)",
    (STORAGE_TIMESCALEDB, "fixed"): _TIMESCALE_FIXED,
    (STORAGE_POSTGRESQL, "wall"): "date_bin($4::text::interval, local_ts, $5::timestamp)",
    (STORAGE_TIMESCALEDB, "wall"): _TIMESCALE_WALL,
    # date_bin() takes no months; time_bucket() does (TimescaleDB >= 2.8).
    (STORAGE_POSTGRESQL, "months"): _PLAIN_MONTH_BUCKET,
    (STORAGE_TIMESCALEDB, "months"): _TIMESCALE_WALL,
}
_RANGE_SQL = "FROM readings WHERE sensor_uuid = $1 AND ts >= $2 AND ts < $3"
_SOURCE_SQL = {
    "fixed": f"SELECT ts, value {_RANGE_SQL}",
    "calendar": f"SELECT ts AT TIME ZONE $6::text AS local_ts, value {_RANGE_SQL}",
}


def _aggregate_sql(storage: str, interval: Interval, stats: Sequence[Stat]) -> str:
    if interval.is_fixed_length:
        kind, source = "fixed", _SOURCE_SQL["fixed"]
    else:
        kind = "months" if interval.unit == "mo" else "wall"
        source = _SOURCE_SQL["calendar"]
    columns = ", ".join(f'{_STAT_SQL[stat]} AS "{stat.value}"' for stat in stats)
    return (
        f"SELECT {_BUCKET_SQL[(storage, kind)]} AS bucket, {columns} "  # noqa: S608
        f"FROM ({source}) AS source GROUP BY 1 ORDER BY 1"
    )


async def _fetch_buckets(
    connection: Connection,
    *,
    storage: str,
    sensor_uuid: UUID,
    grid: _Grid,
    end: datetime,
    interval: Interval,
    stats: Sequence[Stat],
    zone: ZoneInfo,
) -> list[asyncpg.Record]:
    sql = _aggregate_sql(storage, interval, stats)
    first_start = grid.starts[0]
    if interval.is_fixed_length:
        return await connection.fetch(
            sql, sensor_uuid, first_start, end, interval.sql_width, first_start
        )
    return await connection.fetch(
        sql, sensor_uuid, first_start, end, interval.sql_width, grid.keys[0], zone.key
    )


async def _last_value_before(connection: Connection, sensor_uuid: UUID, before: datetime) -> Any:
    """The sensor's last reading before an instant: one backward probe of the primary key."""
    return await connection.fetchval(
        "SELECT value FROM readings WHERE sensor_uuid = $1 AND ts < $2 ORDER BY ts DESC LIMIT 1",
        sensor_uuid,
        before,
    )


# --- the bucket grid -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """Buckets from floor(start) up to end: their SQL keys and their start instants (UTC).

    A key is the start instant itself for fixed buckets and the naive wall-clock label for
    calendar ones. Bucket i covers [starts[i], starts[i+1]), the last one [starts[-1], end).
    """

    keys: list[datetime]
    starts: list[datetime]


def _too_many_buckets(interval: Interval) -> ValueError:
    return ValueError(
        f"the range holds more than {MAX_BUCKETS} buckets of {interval}; "
        "shorten the range or use a longer interval"
    )


def _first_instant(label: datetime, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which the wall clock of ``zone`` reaches ``label``.

    For a label that occurs twice (fall-back) that is its first occurrence; for one that never
    occurs (spring-forward gap) it is the instant of the jump.
    """
    earlier = label.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if earlier.astimezone(zone).replace(tzinfo=None) == label:
        return earlier
    # In a gap, fold=1 reads the label with the offset after the jump (an instant before it,
    # whose wall clock is short of the label) and fold=0 with the offset before it (after the
    # jump). Bisect between them, to the second, for the jump itself.
    low = label.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = earlier
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= label:
            high = middle
        else:
            low = middle
    return high


def _floor_label(local: datetime, interval: Interval) -> datetime:
    """The wall-clock label of the calendar bucket holding a naive local time."""
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval.unit == "h":
        return midnight.replace(hour=local.hour - local.hour % interval.amount)
    if interval.unit == "d":
        return midnight
    if interval.unit == "w":
        return midnight - timedelta(days=midnight.weekday())
    month = local.month - (local.month - 1) % interval.amount
    return midnight.replace(month=month, day=1)


def _next_label(label: datetime, interval: Interval) -> datetime:
    if interval.unit != "mo":
        return label + interval.wall_clock_width
    months = label.year * 12 + label.month - 1 + interval.amount
    return label.replace(year=months // 12, month=months % 12 + 1)


def _build_grid(start: datetime, end: datetime, interval: Interval, zone: ZoneInfo) -> _Grid:
    if interval.is_fixed_length:
        width = interval.wall_clock_width
        local = start.astimezone(zone)
        wall = local.replace(tzinfo=None)
        midnight = wall.replace(hour=0, minute=0, second=0, microsecond=0)
        floored_wall = wall - (wall - midnight) % width
        offset = local.utcoffset()
        assert offset is not None
        first = (floored_wall - offset).replace(tzinfo=UTC)
        count = math.ceil((end - first) / width)
        if count > MAX_BUCKETS:
            raise _too_many_buckets(interval)
        fixed_starts = [first + index * width for index in range(count)]
        return _Grid(keys=fixed_starts, starts=fixed_starts)

    keys: list[datetime] = []
    starts: list[datetime] = []
    label = _floor_label(start.astimezone(zone).replace(tzinfo=None), interval)
    instant = _first_instant(label, zone)
    while instant < end:
        if len(keys) == MAX_BUCKETS:
            raise _too_many_buckets(interval)
        following = _next_label(label, interval)
        following_instant = _first_instant(following, zone)
        # A label the clock skipped entirely (Samoa's 2011-12-30) is a bucket of no length.
        if following_instant > instant:
            keys.append(label)
            starts.append(instant)
        label, instant = following, following_instant
    return _Grid(keys=keys, starts=starts)


# --- shaping the result --------------------------------------------------------------------


def _shape_buckets(
    grid: _Grid,
    rows: Sequence[asyncpg.Record],
    *,
    end: datetime,
    stats: Sequence[Stat],
    zone: ZoneInfo,
    fill: Fill,
    value_before: float | None,
) -> list[Bucket]:
    """Put SQL rows on the grid and fill the empty buckets. Runs in a worker thread."""
    index_of = {key: index for index, key in enumerate(grid.keys)}
    observed: dict[int, dict[str, StatValue]] = {}
    for row in rows:
        index = index_of.get(row["bucket"])
        if index is None:
            raise RuntimeError(f"bucket {row['bucket']} from the database is not on the grid")
        observed[index] = {stat.value: row[stat.value] for stat in stats}

    count = len(grid.starts)
    fills = _fill_values(grid, observed, stats, fill, value_before) if fill != Fill.NONE else {}
    buckets = []
    for index in range(count):
        values = observed.get(index)
        is_filled = values is None
        if values is None:
            if fill == Fill.NONE:
                continue
            values = fills[index]
        bucket_end = grid.starts[index + 1] if index + 1 < count else end
        buckets.append(
            Bucket(
                start=grid.starts[index].astimezone(zone),
                end=bucket_end.astimezone(zone),
                values=values,
                filled=is_filled,
            )
        )
    return buckets


def _fill_values(
    grid: _Grid,
    observed: dict[int, dict[str, StatValue]],
    stats: Sequence[Stat],
    fill: Fill,
    value_before: float | None,
) -> dict[int, dict[str, StatValue]]:
    """Values of every empty bucket, stat by stat, for the null/previous/linear fills.

    count is a fact, not a measurement: it is 0 in every empty bucket whatever the fill.
    """
    count = len(grid.starts)
    empty = np.array([index not in observed for index in range(count)])
    observed_index = np.flatnonzero(~empty)
    columns: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = {}
    for stat in stats:
        if stat == Stat.COUNT:
            continue
        column = np.full(count, np.nan)
        for index in observed_index:
            value = observed[int(index)][stat.value]
            if value is not None:
                column[index] = value
        if fill == Fill.PREVIOUS:
            column = _carry_forward(column, empty, _leading_value(stat, value_before))
        elif fill == Fill.LINEAR:
            column = _interpolate(column, empty, grid.starts)
        columns[stat.value] = column

    result: dict[int, dict[str, StatValue]] = {}
    for index in np.flatnonzero(empty):
        values: dict[str, StatValue] = {}
        for stat in stats:
            if stat == Stat.COUNT:
                values[stat.value] = 0
            else:
                value = float(columns[stat.value][index])
                values[stat.value] = None if math.isnan(value) else value
        result[int(index)] = values
    return result


def _leading_value(stat: Stat, value_before: float | None) -> float:
    """What a bucket holding only the last reading before the range would report."""
    if value_before is None or stat == Stat.STDDEV:
        return math.nan  # the sample standard deviation of one reading is undefined
    return value_before


def _carry_forward(
    column: np.ndarray[Any, np.dtype[np.float64]],
    empty: np.ndarray[Any, np.dtype[np.bool_]],
    leading: float,
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Each empty bucket takes the stat of the last non-empty bucket before it (null included:
    after a one-reading bucket the carried stddev is null), or ``leading`` if there is none."""
    positions = np.where(empty, -1, np.arange(len(column)))
    source = np.maximum.accumulate(positions)
    carried = np.where(source >= 0, column[np.maximum(source, 0)], leading)
    return np.where(empty, carried, column)


def _interpolate(
    column: np.ndarray[Any, np.dtype[np.float64]],
    empty: np.ndarray[Any, np.dtype[np.bool_]],
    starts: Sequence[datetime],
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Empty buckets between two known values of the stat take the straight line through them,
    in time at bucket starts (a 23-hour day weighs less than a 25-hour one); the empties before
    the first and after the last known value stay null."""
    known = ~np.isnan(column) & ~empty
    if not known.any():
        return column
    seconds = np.array([start.timestamp() for start in starts])
    known_seconds, known_values = seconds[known], column[known]
    inside = empty & (seconds > known_seconds[0]) & (seconds < known_seconds[-1])
    result = column.copy()
    result[inside] = np.interp(seconds[inside], known_seconds, known_values)
    return result


# --- the entry point -----------------------------------------------------------------------


async def aggregate_readings(
    connection: Connection,
    *,
    sensor_uuid: UUID,
    start: datetime,
    end: datetime,
    interval: Interval,
    stats: Sequence[Stat],
    zone: ZoneInfo,
    fill: Fill,
    storage: str,
) -> list[Bucket]:
    """Buckets of one sensor's readings over [floor(start), end), aligned in ``zone``.

    The first bucket starts at the calendar boundary at or before ``start`` and holds the
    readings from there; the last one is cut at ``end``, so every bucket's [start, end) is
    exactly the range of readings it summarises. ``storage`` is what ``readings_storage()``
    returns and selects time_bucket() or date_bin(). Raises ValueError for a bad request.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    if end <= start:
        raise ValueError("end must be after start")
    if storage not in (STORAGE_POSTGRESQL, STORAGE_TIMESCALEDB):
        raise ValueError(f"unknown readings storage {storage!r}")
    if zone.key is None:
        raise ValueError("zone must be a named IANA time zone")
    requested = list(dict.fromkeys(Stat(stat) for stat in stats))
    if not requested:
        raise ValueError("ask for at least one stat")

    grid = await asyncio.to_thread(_build_grid, start, end, interval, zone)
    rows = await _fetch_buckets(
        connection,
        storage=storage,
        sensor_uuid=sensor_uuid,
        grid=grid,
        end=end,
        interval=interval,
        stats=requested,
        zone=zone,
    )
    value_before = None
    leading_empty = not rows or rows[0]["bucket"] != grid.keys[0]
    if fill == Fill.PREVIOUS and leading_empty:
        value_before = await _last_value_before(connection, sensor_uuid, grid.starts[0])
    return await asyncio.to_thread(
        _shape_buckets,
        grid,
        rows,
        end=end,
        stats=requested,
        zone=zone,
        fill=fill,
        value_before=value_before,
    )
