"""A sensor with 2,500 readings every 15 minutes across the 2013-10-27 DST change."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import IngestEnvironment
from tests.helpers import run_job

A = str(uuid.UUID(int=1))
B = str(uuid.UUID(int=2))
FIRST = datetime(2013, 10, 26, 0, 0, tzinfo=UTC)
# 2,500 readings of A every 15 minutes, across the 2013-10-27 DST change; a few of B.
A_TIMES = [FIRST + timedelta(minutes=15 * n) for n in range(2_500)]


@pytest.fixture
async def loaded(ingest: IngestEnvironment) -> IngestEnvironment:
    await ingest.put("mapping.csv", f"sensor_name;sensor_uuid\nsensor_a;{A}\nsensor_b;{B}\n")
    assert (await run_job(ingest.client, "/ingest/mapping"))["status"] == "succeeded"
    lines = [f"{t.isoformat()};{A};{n * 0.5}" for n, t in enumerate(A_TIMES)]
    lines += [f"{FIRST.isoformat()};{B};-1.0"]
    await ingest.put("Timeseries/a.csv", "timestamp;sensor_uuid;sensor_value\n" + "\n".join(lines))
    assert (await run_job(ingest.client, "/ingest/timeseries"))["rows_inserted"] == 2_501
    return ingest


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
