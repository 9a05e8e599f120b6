"""Readings of one sensor over [start, end): pages for JSON, whole-range streams for CSV
and NDJSON."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from app.core.config import Settings
from app.core.errors import InvalidInput
from app.core.pagination import decode_cursor, encode_cursor
from app.readings import aggregates, repository
from app.readings.exceptions import InvalidParameter
from app.readings.schemas import AggregateBucket, AggregatePage, Order

MAX_LIMIT = 10_000
# Chunks PostgreSQL's COPY output may queue ahead of a slow client: memory stays bounded.
STREAM_QUEUE_CHUNKS = 16


@dataclass(frozen=True)
class ReadingsQuery:
    sensor_name: str
    sensor_uuid: UUID
    start: datetime
    end: datetime
    order: Order
    tz: str

    @property
    def fingerprint(self) -> str:
        """Binds a cursor to the query it was issued for."""
        key = f"{self.sensor_uuid}|{self.start.isoformat()}|{self.end.isoformat()}|{self.order}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def parse_instant(parameter: str, text: str, source_zone: ZoneInfo) -> datetime:
    """ISO 8601 with an offset or Z; a naive time is read in SOURCE_TIMEZONE."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise InvalidParameter(
            parameter, f"{text!r} is not an ISO 8601 time such as 2013-01-01T00:00:00+01:00"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=source_zone)
    return parsed


def parse_zone(text: str) -> ZoneInfo:
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidParameter("tz", f"{text!r} is not an IANA time zone") from None


def build_query(
    settings: Settings,
    *,
    sensor_name: str,
    sensor_uuid: UUID,
    start: str,
    end: str,
    order: Order,
    tz: str,
) -> ReadingsQuery:
    parse_zone(tz)
    start_at = parse_instant("start", start, settings.source_zone)
    end_at = parse_instant("end", end, settings.source_zone)
    if end_at <= start_at:
        raise InvalidParameter("end", f"must be after start ({start_at.isoformat()})")
    return ReadingsQuery(sensor_name, sensor_uuid, start_at, end_at, order, tz)


def check_json_range(settings: Settings, query: ReadingsQuery) -> None:
    """JSON answers (pages, aggregates) cover at most READINGS_JSON_MAX_DAYS; streams do not."""
    widest = timedelta(days=settings.readings_json_max_days)
    if query.end - query.start > widest:
        raise InvalidParameter(
            "end",
            f"JSON covers at most READINGS_JSON_MAX_DAYS = {settings.readings_json_max_days} "
            "days from start; narrow the range, or stream it with format=csv|ndjson",
        )


async def read_page(
    pool: asyncpg.Pool,
    query: ReadingsQuery,
    *,
    limit: int,
    cursor: str | None,
    page: int | None,
) -> dict[str, Any]:
    """One page, shaped as ReadingsPage, of plain values for JSONBytesResponse: a model per
    reading cost more than the query itself."""
    after = None
    offset = 0
    if cursor is not None and page is not None:
        raise InvalidInput("give either cursor or page, not both")
    if cursor is not None:
        position = decode_cursor(cursor, {"after", "query"})
        if position["query"] != query.fingerprint:
            raise InvalidParameter("cursor", "was issued for another sensor, range or order")
        after = datetime.fromisoformat(position["after"])
    if page is not None:
        offset = (page - 1) * limit
    # Borrowed only for this query: a streaming response must not hold a second connection.
    async with pool.acquire() as connection:
        records = await repository.fetch_page(
            connection,
            sensor_uuid=query.sensor_uuid,
            start=query.start,
            end=query.end,
            after=after,
            descending=query.order is Order.DESC,
            limit=limit + 1,
            offset=offset,
        )
    has_more = len(records) > limit
    records = records[:limit]
    zone = ZoneInfo(query.tz)
    items = [{"timestamp": ts.astimezone(zone), "value": value} for ts, value in records]
    next_cursor = None
    if has_more:
        next_cursor = encode_cursor(
            {"after": records[-1]["ts"].isoformat(), "query": query.fingerprint}
        )
    return {
        "sensor_name": query.sensor_name,
        "sensor_uuid": query.sensor_uuid,
        "start": query.start.astimezone(zone),
        "end": query.end.astimezone(zone),
        "order": query.order,
        "tz": query.tz,
        "items": items,
        "count": len(items),
        "has_more": has_more,
        "next_cursor": next_cursor,
    }


async def stream_range(
    pool: asyncpg.Pool, query: ReadingsQuery, *, ndjson: bool
) -> AsyncIterator[bytes]:
    """The whole range as CSV or NDJSON chunks, produced by PostgreSQL's COPY and passed
    through a small bounded queue, so a slow client slows the query instead of filling
    memory."""
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=STREAM_QUEUE_CHUNKS)

    async def enqueue(data: bytes) -> None:
        # asyncpg may reuse its buffer for the next chunk: keep a copy.
        await chunks.put(bytes(data))

    async def produce() -> None:
        try:
            async with pool.acquire() as connection, connection.transaction():
                await repository.copy_range(
                    connection,
                    sensor_uuid=query.sensor_uuid,
                    start=query.start,
                    end=query.end,
                    descending=query.order is Order.DESC,
                    tz=query.tz,
                    ndjson=ndjson,
                    output=enqueue,
                )
        finally:
            await chunks.put(None)

    producer = asyncio.create_task(produce())
    try:
        while (chunk := await chunks.get()) is not None:
            yield chunk
        await producer  # surfaces a database error instead of ending the stream silently
    finally:
        if not producer.done():
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)


def parse_aggregation(
    interval: str, stats: str, fill: str
) -> tuple[aggregates.Interval, list[aggregates.Stat], aggregates.Fill]:
    try:
        parsed_interval = aggregates.parse_interval(interval)
    except ValueError as error:
        raise InvalidParameter("interval", str(error)) from None
    names = [name.strip() for name in stats.split(",") if name.strip()]
    known = [stat.value for stat in aggregates.Stat]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise InvalidParameter("stats", f"choose from {', '.join(known)} (got {stats!r})")
    try:
        parsed_fill = aggregates.Fill(fill)
    except ValueError:
        choices = ", ".join(f.value for f in aggregates.Fill)
        raise InvalidParameter("fill", f"choose from {choices}") from None
    return parsed_interval, [aggregates.Stat(name) for name in names], parsed_fill


async def aggregate(
    pool: asyncpg.Pool, query: ReadingsQuery, *, interval: str, stats: str, fill: str
) -> AggregatePage:
    parsed_interval, parsed_stats, parsed_fill = parse_aggregation(interval, stats, fill)
    zone = ZoneInfo(query.tz)
    async with pool.acquire() as connection:
        storage = await repository.readings_storage(connection)
        try:
            buckets = await aggregates.aggregate_readings(
                connection,
                sensor_uuid=query.sensor_uuid,
                start=query.start,
                end=query.end,
                interval=parsed_interval,
                stats=parsed_stats,
                zone=zone,
                fill=parsed_fill,
                storage=storage,
            )
        except ValueError as error:
            # The bucket cap, mostly: too fine an interval for the range.
            raise InvalidParameter("interval", str(error)) from None
    if query.order is Order.DESC:
        buckets.reverse()
    return AggregatePage(
        sensor_name=query.sensor_name,
        sensor_uuid=query.sensor_uuid,
        start=query.start.astimezone(zone),
        end=query.end.astimezone(zone),
        interval=interval,
        tz=query.tz,
        stats=[stat.value for stat in parsed_stats],
        fill=parsed_fill.value,
        buckets=[
            AggregateBucket(start=b.start, end=b.end, filled=b.filled, **b.values) for b in buckets
        ],
        count=len(buckets),
    )
