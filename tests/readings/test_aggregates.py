"""Calendar-aligned aggregates against the real timeseries database.

Expected values are worked out by hand (bucket boundaries, counts) or with numpy (stats),
never with the module under test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import asyncpg
import numpy as np
import pytest

from app.readings.aggregates import (
    MAX_BUCKETS,
    Bucket,
    Fill,
    Interval,
    Stat,
    aggregate_readings,
    parse_interval,
)

BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")


@pytest.fixture
async def timeseries(database_urls: tuple[str, str]) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_urls[1], server_settings={"timezone": "UTC"})
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def storage(timeseries: asyncpg.Connection) -> str:
    result: str = await timeseries.fetchval("SELECT readings_storage()")
    return result


@pytest.fixture
async def sensor(timeseries: asyncpg.Connection) -> AsyncIterator[UUID]:
    sensor_uuid = uuid4()
    yield sensor_uuid
    await timeseries.execute("DELETE FROM readings WHERE sensor_uuid = $1", sensor_uuid)


async def insert_readings(
    connection: asyncpg.Connection, sensor_uuid: UUID, readings: Sequence[tuple[datetime, float]]
) -> None:
    instants = [ts for ts, _ in readings]
    await connection.execute(
        "SELECT ensure_readings_partitions($1, $2)", min(instants), max(instants)
    )
    await connection.copy_records_to_table(
        "readings",
        records=[(ts, sensor_uuid, value) for ts, value in readings],
        columns=("ts", "sensor_uuid", "value"),
    )


def every(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """Instants from start to end; in UTC, because aware arithmetic in a zone is wall-clock."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    instants = []
    while start < end:
        instants.append(start)
        start += step
    return instants


def local(
    zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


async def aggregate(
    connection: asyncpg.Connection,
    sensor_uuid: UUID,
    storage: str,
    start: datetime,
    end: datetime,
    *,
    interval: str = "1h",
    stats: Sequence[Stat] = (Stat.COUNT,),
    zone: ZoneInfo = BERLIN,
    fill: Fill = Fill.NONE,
) -> list[Bucket]:
    return await aggregate_readings(
        connection,
        sensor_uuid=sensor_uuid,
        start=start,
        end=end,
        interval=parse_interval(interval),
        stats=stats,
        zone=zone,
        fill=fill,
        storage=storage,
    )


def duration(bucket: Bucket) -> timedelta:
    # Subtracting two datetimes of the same zone would compare wall clocks.
    return bucket.end.astimezone(UTC) - bucket.start.astimezone(UTC)


def spans(buckets: Sequence[Bucket]) -> list[tuple[datetime, datetime, int | float | None]]:
    # In UTC: Python never finds a time in a fold equal to a time of another zone (PEP 495).
    return [
        (bucket.start.astimezone(UTC), bucket.end.astimezone(UTC), bucket.values.get("count"))
        for bucket in buckets
    ]


# --- DST and calendar boundaries --------------------------------------------------------


@pytest.mark.parametrize(
    ("first_day", "change_day", "change_day_hours", "offsets"),
    [
        pytest.param((2013, 3, 30), (2013, 3, 31), 23, (1, 1, 2, 2), id="spring-forward"),
        pytest.param((2013, 10, 26), (2013, 10, 27), 25, (2, 2, 1, 1), id="fall-back"),
    ],
)
async def test_berlin_days_are_23_or_25_hours_on_dst_days(
    timeseries: asyncpg.Connection,
    sensor: UUID,
    storage: str,
    first_day: tuple[int, int, int],
    change_day: tuple[int, int, int],
    change_day_hours: int,
    offsets: tuple[int, int, int, int],
) -> None:
    day_starts = [local(BERLIN, *first_day) + timedelta(days=offset) for offset in range(4)]
    # Calendar days computed from the wall clock, then converted: the instants differ by 23/25 h.
    instants = [start.astimezone(UTC) for start in day_starts]
    await insert_readings(
        timeseries,
        sensor,
        [(ts, 1.0) for ts in every(instants[0], instants[-1], timedelta(hours=1))],
    )

    buckets = await aggregate(
        timeseries, sensor, storage, day_starts[0], day_starts[-1], interval="1d"
    )

    assert [bucket.start.utcoffset() for bucket in buckets] == [
        timedelta(hours=hours) for hours in offsets[:3]
    ]
    assert [(bucket.start, bucket.end) for bucket in buckets] == list(pairwise(instants))
    assert buckets[1].start == local(BERLIN, *change_day)
    assert duration(buckets[1]) == timedelta(hours=change_day_hours)
    assert [bucket.values["count"] for bucket in buckets] == [24, change_day_hours, 24]
    assert all(bucket.start.tzinfo is BERLIN and bucket.end.tzinfo is BERLIN for bucket in buckets)


async def test_repeated_fall_back_hour_gives_two_hourly_buckets(
    timeseries: asyncpg.Connection, sensor: UUID, storage: str
) -> None:
    # 2013-10-27 Berlin: 00:00 CEST is 22:00Z; 05:00 CET is 04:00Z; 02:xx happens twice.
    await insert_readings(
        timeseries,
        sensor,
        [
            (ts, 1.0)
            for ts in every(utc(2013, 10, 26, 22), utc(2013, 10, 27, 4), timedelta(minutes=10))
        ],
    )

    buckets = await aggregate(
        timeseries, sensor, storage, local(BERLIN, 2013, 10, 27), local(BERLIN, 2013, 10, 27, 5)
    )

    walls = [(b.start.hour, b.start.utcoffset()) for b in buckets]
    assert walls == [
        (0, timedelta(hours=2)),
        (1, timedelta(hours=2)),
        (2, timedelta(hours=2)),
        (2, timedelta(hours=1)),
        (3, timedelta(hours=1)),
        (4, timedelta(hours=1)),
    ]
    assert [b.start.astimezone(UTC) for b in buckets] == every(
        utc(2013, 10, 26, 22), utc(2013, 10, 27, 4), timedelta(hours=1)
    )
    assert all(duration(b) == timedelta(hours=1) for b in buckets)
    assert [b.values["count"] for b in buckets] == [6] * 6


async def test_two_hour_bucket_holds_both_passes_of_the_repeated_wall_clock_hour(
    timeseries: asyncpg.Connection, sensor: UUID, storage: str
) -> None:
    # 2h buckets are wall-clock periods: [02:00, 04:00) local on 2013-10-27 is 00:00Z-03:00Z.
    await insert_readings(
        timeseries,
        sensor,
        [
            (ts, 1.0)
            for ts in every(utc(2013, 10, 26, 22), utc(2013, 10, 27, 5), timedelta(minutes=30))
        ],
    )

    buckets = await aggregate(
        timeseries,
        sensor,
        storage,
        local(BERLIN, 2013, 10, 27),
        local(BERLIN, 2013, 10, 27, 6),
        interval="2h",
    )

    assert spans(buckets) == [
        (utc(2013, 10, 26, 22), utc(2013, 10, 27, 0), 4),
        (utc(2013, 10, 27, 0), utc(2013, 10, 27, 3), 6),
        (utc(2013, 10, 27, 3), utc(2013, 10, 27, 5), 4),
    ]
    # Labelled 02:00 on the wall clock, at its first pass (summer time).
    assert (buckets[1].start.hour, buckets[1].start.utcoffset()) == (2, timedelta(hours=2))


async def test_six_hour_buckets_start_at_local_quarter_days_through_spring_forward(
    timeseries: asyncpg.Connection, sensor: UUID, storage: str
) -> None:
    start, end = local(BERLIN, 2013, 3, 31), local(BERLIN, 2013, 4, 1)
    await insert_readings(
        timeseries, sensor, [(ts, 1.0) for ts in every(start, end, timedelta(hours=1))]
    )

    buckets = await aggregate(timeseries, sensor, storage, start, end, interval="6h")

    assert [b.start.hour for b in buckets] == [0, 6, 12, 18]
    assert [b.values["count"] for b in buckets] == [5, 6, 6, 6]
    assert duration(buckets[0]) == timedelta(hours=5)


async def test_weekly_buckets_start_on_monday_local_midnight(
    timeseries: asyncpg.Connection, sensor: UUID, storage: str
) -> None:
    # One reading a day at noon from Monday 2013-10-14 to Tuesday 2013-11-05.
    days = [local(BERLIN, 2013, 10, 14, 12) + timedelta(days=offset) for offset in range(23)]
    await insert_readings(timeseries, sensor, [(ts.astimezone(UTC), 1.0) for ts in days])

    buckets = await aggregate(
        timeseries,
        sensor,
        storage,
        local(BERLIN, 2013, 10, 16, 12),  # a Wednesday
        local(BERLIN, 2013, 11, 6),
        interval="1w",
    )

    assert spans(buckets) == [
        (local(BERLIN, 2013, 10, 14), local(BERLIN, 2013, 10, 21), 7),
        (local(BERLIN, 2013, 10, 21), local(BERLIN, 2013, 10, 28), 7),
        (local(BERLIN, 2013, 10, 28), local(BERLIN, 2013, 11, 4), 7),
        (local(BERLIN, 2013, 11, 4), local(BERLIN, 2013, 11, 6), 2),
    ]
    assert duration(buckets[1]) == timedelta(days=7, hours=1)


async def test_monthly_and_quarterly_buckets_start_on_the_first(
    timeseries: asyncpg.Connection, sensor: UUID, storage: str
) -> None:
    # One reading a day at local midnight (the first instant of each day) for 2013.
    days = [local(BERLIN, 2013, 1, 1) + timedelta(days=offset) for offset in range(365)]
    await insert_readings(timeseries, sensor, [(ts.astimezone(UTC), 1.0) for ts in days])

    monthly = await aggregate(
        timeseries,
        sensor,
        storage,
        local(BERLIN, 2013, 9, 15),
        local(BERLIN, 2014, 1, 1),
        interval="1mo",
    )
    quarterly = await aggregate(
        timeseries,
        sensor,
        storage,
        local(BERLIN, 2013, 5, 15),
        local(BERLIN, 2014, 1, 1),
        interval="3mo",
    )

    assert spans(monthly) == [
        (local(BERLIN, 2013, 9, 1), local(BERLIN, 2013, 10, 1), 30),
        (local(BERLIN, 2013, 10, 1), local(BERLIN, 2013, 11, 1), 31),
        (local(BERLIN, 2013, 11, 1), local(BERLIN, 2013, 12, 1), 30),
        (local(BERLIN, 2013, 12, 1), local(BERLIN, 2014, 1, 1), 31),
    ]
    assert duration(monthly[1]) == timedelta(days=31, hours=1)
    assert spans(quarterly) == [
        (local(BERLIN, 2013, 4, 1), local(BERLIN, 2013, 7, 1), 91),
        (local(BERLIN, 2013, 7, 1), local(BERLIN, 2013, 10, 1), 92),
        (local(BERLIN, 2013, 10, 1), local(BERLIN, 2014, 1, 1), 92),
    ]


async def test_start_off_boundary_floors_and_end_off_boundary_cuts(
    timeseries: asyncpg.Connection, sensor: UUID, storage: str
) -> None:
    await insert_readings(
        timeseries,
        sensor,
        [
            (ts, 1.0)
            for ts in every(
                local(BERLIN, 2013, 6, 10, 9), local(BERLIN, 2013, 6, 10, 14), timedelta(minutes=10)
            )
        ],
    )
    start, end = local(BERLIN, 2013, 6, 10, 10, 20), local(BERLIN, 2013, 6, 10, 12, 40)

    hourly = await aggregate(timeseries, sensor, storage, start, end)
    quarter_hours = await aggregate(timeseries, sensor, storage, start, end, interval="15m")

    assert spans(hourly) == [
        (local(BERLIN, 2013, 6, 10, 10), local(BERLIN, 2013, 6, 10, 11), 6),
        (local(BERLIN, 2013, 6, 10, 11), local(BERLIN, 2013, 6, 10, 12), 6),
        (local(BERLIN, 2013, 6, 10, 12), end, 4),  # 12:00 .. 12:30; 12:40 is excluded
    ]
    assert quarter_hours[0].start == local(BERLIN, 2013, 6, 10, 10, 15)
    assert quarter_hours[-1].start == local(BERLIN, 2013, 6, 10, 12, 30)
    assert quarter_hours[-1].end == end
    assert sum(b.values["count"] or 0 for b in quarter_hours) == 14  # 10:20 .. 12:30


async def test_half_hour_zone_aligns_hours_and_days_to_local_clock(
    timeseries: asyncpg.Connection, sensor: UUID, storage: str
) -> None:
    # Kolkata is UTC+05:30: local hours start at :30 UTC and local days at 18:30 UTC.
    await insert_readings(
        timeseries,
        sensor,
        [(ts, 1.0) for ts in every(utc(2013, 6, 10), utc(2013, 6, 11, 3), timedelta(minutes=15))],
    )

    hourly = await aggregate(
        timeseries, sensor, storage, utc(2013, 6, 10), utc(2013, 6, 10, 3), zone=KOLKATA
    )
    daily = await aggregate(
        timeseries,
        sensor,
        storage,
        utc(2013, 6, 10),
        utc(2013, 6, 11, 3),
        interval="1d",
        zone=KOLKATA,
    )

    assert spans(hourly) == [
        (utc(2013, 6, 9, 23, 30), utc(2013, 6, 10, 0, 30), 2),
        (utc(2013, 6, 10, 0, 30), utc(2013, 6, 10, 1, 30), 4),
        (utc(2013, 6, 10, 1, 30), utc(2013, 6, 10, 2, 30), 4),
        (utc(2013, 6, 10, 2, 30), utc(2013, 6, 10, 3), 2),
    ]
    assert [b.start.minute for b in hourly] == [0, 0, 0, 0]
    assert spans(daily) == [
        (utc(2013, 6, 9, 18, 30), utc(2013, 6, 10, 18, 30), 74),  # 00:00Z .. 18:15Z
        (utc(2013, 6, 10, 18, 30), utc(2013, 6, 11, 3), 34),  # 18:30Z .. 02:45Z
    ]
    assert daily[1].start == local(KOLKATA, 2013, 6, 11)


# --- statistics --------------------------------------------------------------------------


async def test_every_stat_matches_numpy(
    timeseries: asyncpg.Connection, sensor: UUID, storage: str
) -> None:
    generator = np.random.default_rng(20130331)
    hour_starts = every(utc(2013, 7, 1), utc(2013, 7, 1, 6), timedelta(hours=1))
    sizes = [37, 1, 2, 120, 9, 64]  # one reading: null stddev; two: the smallest real one
    expected_groups: list[np.ndarray] = []
    readings = []
    for hour_start, size in zip(hour_starts, sizes, strict=True):
        seconds = generator.choice(3600, size=size, replace=False)
        values = generator.normal(20.0, 5.0, size=size)
        readings += [
            (hour_start + timedelta(seconds=int(s)), float(v))
            for s, v in zip(seconds, values, strict=True)
        ]
        expected_groups.append(values)
    await insert_readings(timeseries, sensor, readings)

    buckets = await aggregate(
        timeseries, sensor, storage, hour_starts[0], utc(2013, 7, 1, 6), stats=list(Stat)
    )

    assert [b.start for b in buckets] == hour_starts
    for bucket, values in zip(buckets, expected_groups, strict=True):
        assert bucket.values["count"] == len(values)
        assert bucket.values["min"] == values.min()
        assert bucket.values["max"] == values.max()
        assert bucket.values["avg"] == pytest.approx(values.mean(), rel=1e-12)
        if len(values) == 1:
            assert bucket.values["stddev"] is None
        else:
            assert bucket.values["stddev"] == pytest.approx(values.std(ddof=1), rel=1e-9)
        for name, q in (("p25", 25), ("median", 50), ("p75", 75)):
            assert bucket.values[name] == pytest.approx(np.percentile(values, q), rel=1e-12)
        assert bucket.filled is False


async def test_only_requested_stats_are_reported(
    timeseries: asyncpg.Connection, sensor: UUID, storage: str
) -> None:
    await insert_readings(timeseries, sensor, [(utc(2013, 7, 1, 0, 5), 3.0)])

    buckets = await aggregate(
        timeseries,
        sensor,
        storage,
        utc(2013, 7, 1),
        utc(2013, 7, 1, 1),
        stats=[Stat.MEDIAN, Stat.MAX, Stat.MEDIAN],
    )

    assert [b.values for b in buckets] == [{"median": 3.0, "max": 3.0}]


# --- empty buckets -----------------------------------------------------------------------

FILL_STATS = (Stat.COUNT, Stat.AVG, Stat.MAX, Stat.STDDEV)
# Berlin days 2013-03-29 .. 2013-04-03; 03-31 is 23 h long. Data on 03-30 and 04-02 only.
FILL_DAYS = [local(BERLIN, 2013, 3, 29) + timedelta(days=offset) for offset in range(6)]


@pytest.fixture
async def sparse_sensor(timeseries: asyncpg.Connection, sensor: UUID) -> UUID:
    await insert_readings(
        timeseries,
        sensor,
        [
            (local(BERLIN, 2013, 3, 27, 8), 99.0),  # older, must not be used
            (local(BERLIN, 2013, 3, 27, 9), 5.0),  # the last reading before the range
            (local(BERLIN, 2013, 3, 30, 6), 10.0),
            (local(BERLIN, 2013, 3, 30, 18), 20.0),
            (local(BERLIN, 2013, 4, 2, 12), 40.0),
            (local(BERLIN, 2013, 4, 4, 1), 77.0),  # after the range, must not be used
        ],
    )
    return sensor


async def fill_days(
    connection: asyncpg.Connection, sensor: UUID, storage: str, fill: Fill
) -> list[Bucket]:
    return await aggregate(
        connection,
        sensor,
        storage,
        FILL_DAYS[0],
        local(BERLIN, 2013, 4, 4),
        interval="1d",
        stats=FILL_STATS,
        fill=fill,
    )


OBSERVED_MARCH_30 = {
    "count": 2,
    "avg": 15.0,
    "max": 20.0,
    "stddev": pytest.approx(np.std([10.0, 20.0], ddof=1)),
}
OBSERVED_APRIL_2 = {"count": 1, "avg": 40.0, "max": 40.0, "stddev": None}
NULLS = {"count": 0, "avg": None, "max": None, "stddev": None}


async def test_fill_none_omits_empty_buckets(
    timeseries: asyncpg.Connection, sparse_sensor: UUID, storage: str
) -> None:
    buckets = await fill_days(timeseries, sparse_sensor, storage, Fill.NONE)

    assert [(b.start, b.values, b.filled) for b in buckets] == [
        (FILL_DAYS[1], OBSERVED_MARCH_30, False),
        (FILL_DAYS[4], OBSERVED_APRIL_2, False),
    ]


async def test_fill_null_reports_empty_buckets_with_zero_count(
    timeseries: asyncpg.Connection, sparse_sensor: UUID, storage: str
) -> None:
    buckets = await fill_days(timeseries, sparse_sensor, storage, Fill.NULL)

    assert [b.start for b in buckets] == FILL_DAYS
    assert [(b.values, b.filled) for b in buckets] == [
        (NULLS, True),
        (OBSERVED_MARCH_30, False),
        (NULLS, True),
        (NULLS, True),
        (OBSERVED_APRIL_2, False),
        (NULLS, True),
    ]


async def test_fill_previous_carries_stats_and_uses_the_reading_before_start(
    timeseries: asyncpg.Connection, sparse_sensor: UUID, storage: str
) -> None:
    buckets = await fill_days(timeseries, sparse_sensor, storage, Fill.PREVIOUS)

    carried_march_30 = {**OBSERVED_MARCH_30, "count": 0}
    assert [(b.values, b.filled) for b in buckets] == [
        ({"count": 0, "avg": 5.0, "max": 5.0, "stddev": None}, True),
        (OBSERVED_MARCH_30, False),
        (carried_march_30, True),
        (carried_march_30, True),
        (OBSERVED_APRIL_2, False),
        ({**OBSERVED_APRIL_2, "count": 0}, True),
    ]


async def test_fill_previous_leaves_leading_buckets_null_without_an_earlier_reading(
    timeseries: asyncpg.Connection, sensor: UUID, storage: str
) -> None:
    await insert_readings(timeseries, sensor, [(utc(2013, 7, 1, 2, 30), 4.0)])

    buckets = await aggregate(
        timeseries,
        sensor,
        storage,
        utc(2013, 7, 1),
        utc(2013, 7, 1, 4),
        stats=[Stat.COUNT, Stat.AVG],
        fill=Fill.PREVIOUS,
    )

    assert [b.values for b in buckets] == [
        {"count": 0, "avg": None},
        {"count": 0, "avg": None},
        {"count": 1, "avg": 4.0},
        {"count": 0, "avg": 4.0},
    ]


async def test_fill_linear_interpolates_in_time_between_bucket_starts(
    timeseries: asyncpg.Connection, sparse_sensor: UUID, storage: str
) -> None:
    buckets = await fill_days(timeseries, sparse_sensor, storage, Fill.LINEAR)

    # From 03-30 00:00 to 04-02 00:00 is 24 + 23 + 24 = 71 hours, not 3 equal days.
    def between(first: float, last: float, hours: int) -> object:
        return pytest.approx(first + (last - first) * hours / 71, rel=1e-12)

    assert [(b.values, b.filled) for b in buckets] == [
        (NULLS, True),
        (OBSERVED_MARCH_30, False),
        (
            {"count": 0, "avg": between(15, 40, 24), "max": between(20, 40, 24), "stddev": None},
            True,
        ),
        (
            {"count": 0, "avg": between(15, 40, 47), "max": between(20, 40, 47), "stddev": None},
            True,
        ),
        (OBSERVED_APRIL_2, False),
        (NULLS, True),
    ]


# --- interval parsing and limits -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", Interval(15, "m")),
        ("1m", Interval(1, "m")),
        ("60m", Interval(1, "h")),
        ("120m", Interval(2, "h")),
        ("1h", Interval(1, "h")),
        ("6h", Interval(6, "h")),
        ("1d", Interval(1, "d")),
        ("1w", Interval(1, "w")),
        ("1mo", Interval(1, "mo")),
        ("12mo", Interval(12, "mo")),
        (" 3mo ", Interval(3, "mo")),
    ],
)
def test_parse_interval_accepts_calendar_friendly_sizes(text: str, expected: Interval) -> None:
    assert parse_interval(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a whole number and a unit"),
        ("h", "expected a whole number and a unit"),
        ("1.5h", "expected a whole number and a unit"),
        ("-1h", "expected a whole number and a unit"),
        ("1 h", "expected a whole number and a unit"),
        ("1y", "expected a whole number and a unit"),
        ("1H", "expected a whole number and a unit"),
        ("99999999m", "expected a whole number and a unit"),
        ("0m", "must be positive"),
        ("0mo", "must be positive"),
        ("7m", "minutes must divide an hour"),
        ("45m", "minutes must divide an hour"),
        ("90m", "minutes must divide an hour"),
        ("5h", "hours must divide a day"),
        ("24h", "use '1d'"),
        ("1440m", "use '1d'"),
        ("2d", "only '1d'"),
        ("2w", "only '1w'"),
        ("5mo", "months must divide a year"),
        ("24mo", "months must divide a year"),
    ],
)
def test_parse_interval_rejects_other_sizes_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_interval(text)


def test_interval_constructor_applies_the_same_rules() -> None:
    with pytest.raises(ValueError, match="hours must divide a day"):
        Interval(7, "h")


@pytest.mark.parametrize(
    ("interval", "buckets_in_range"),
    [("1m", timedelta(minutes=1)), ("2h", timedelta(hours=2))],
)
async def test_bucket_grid_is_capped(
    timeseries: asyncpg.Connection,
    sensor: UUID,
    storage: str,
    interval: str,
    buckets_in_range: timedelta,
) -> None:
    start = utc(2013, 1, 1)
    at_cap = await aggregate(
        timeseries,
        sensor,
        storage,
        start,
        start + MAX_BUCKETS * buckets_in_range,
        interval=interval,
        zone=ZoneInfo("UTC"),
        fill=Fill.NULL,
    )
    assert len(at_cap) == MAX_BUCKETS

    with pytest.raises(ValueError, match=f"more than {MAX_BUCKETS} buckets"):
        await aggregate(
            timeseries,
            sensor,
            storage,
            start,
            start + (MAX_BUCKETS + 1) * buckets_in_range,
            interval=interval,
            zone=ZoneInfo("UTC"),
        )


@pytest.mark.parametrize(
    ("start", "end", "storage_name", "message"),
    [
        (datetime(2013, 1, 1), utc(2013, 1, 2), None, "timezone-aware"),
        (utc(2013, 1, 2), utc(2013, 1, 1), None, "end must be after start"),
        (utc(2013, 1, 1), utc(2013, 1, 2), "mysql", "unknown readings storage"),
    ],
)
async def test_bad_requests_are_value_errors(
    timeseries: asyncpg.Connection,
    sensor: UUID,
    storage: str,
    start: datetime,
    end: datetime,
    storage_name: str | None,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        await aggregate(timeseries, sensor, storage_name or storage, start, end)
