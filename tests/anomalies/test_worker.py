"""The analysis processes' side: parsing PostgreSQL's binary COPY output."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import numpy as np

from app.anomalies.worker import parse_series
from app.core.config import Settings


async def test_binary_copy_rows_parse_to_epoch_microseconds_and_values(
    settings: Settings,
) -> None:
    connection = await asyncpg.connect(settings.timeseries_database_url)
    chunks: list[bytes] = []

    async def collect(data: bytes) -> None:
        chunks.append(bytes(data))

    try:
        await connection.copy_from_query(
            """
            SELECT ts, value FROM (VALUES
                ('1999-12-31 23:59:59.5+00'::timestamptz, -1.5::float8),
                ('2013-10-27 00:30:00+00', 0.1),
                ('2038-01-19 03:14:08.000001+00', 1e300)
            ) AS rows (ts, value)
            """,
            output=collect,
            format="binary",
        )
    finally:
        await connection.close()
    timestamps, values = parse_series(b"".join(chunks))
    expected = [
        datetime(1999, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
        datetime(2013, 10, 27, 0, 30, tzinfo=UTC),
        datetime(2038, 1, 19, 3, 14, 8, 1, tzinfo=UTC),
    ]
    assert timestamps.tolist() == [
        (moment - datetime(1970, 1, 1, tzinfo=UTC)) // np.timedelta64(1, "us").item()
        for moment in expected
    ]
    assert values.tolist() == [-1.5, 0.1, 1e300]


def test_an_empty_copy_is_an_empty_series() -> None:
    header = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
    timestamps, values = parse_series(header + b"\xff\xff")
    assert (timestamps.size, values.size) == (0, 0)
