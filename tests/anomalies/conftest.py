"""Three sensors in the bucket, ingested through the API: `spiky` (a spike and a level
shift in 30 days of 15-minute readings), `calm` (the same without anomalies) and `sparse`
(ten readings)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import numpy as np
import pytest

from app.core.config import Settings
from app.storage.s3 import S3Client
from tests.anomalies.series import Series, clean_series, with_level_shift, with_spike
from tests.conftest import IngestEnvironment, ingest_environment
from tests.helpers import run_job

SPIKY = str(uuid.UUID(int=11))
CALM = str(uuid.UUID(int=12))
SPARSE = str(uuid.UUID(int=13))
POINTS = 2880
SPIKE_AT = 1000
SHIFT_AT = 2000
RANGE = {"start": "2012-12-31T00:00:00Z", "end": "2013-02-01T00:00:00Z"}


# Seeds whose noise has no reading beyond the auto threshold: by design about 1 in 20
# clean series of this length has one (and then it is reported, rightly).
SPIKY_SEED = 24
CALM_SEED = 25


def spiky_series() -> Series:
    series = clean_series(POINTS, seed=SPIKY_SEED)
    return with_level_shift(with_spike(series, at=SPIKE_AT), at=SHIFT_AT)


def at(series: Series, index: int) -> datetime:
    return datetime.fromtimestamp(int(series.timestamps[index]) / 1e6, tz=UTC)


def csv_lines(sensor_uuid: str, series: Series) -> list[str]:
    times = series.timestamps.astype("datetime64[us]").astype(str)
    return [f"{t}Z;{sensor_uuid};{v!r}" for t, v in zip(times, series.values.tolist(), strict=True)]


@pytest.fixture(scope="module")
async def sensors(settings: Settings, s3: S3Client) -> AsyncIterator[IngestEnvironment]:
    """Module-scoped: the tests only read, and loading plus starting the analysis
    processes is most of their cost."""
    async with ingest_environment(settings, s3) as environment:
        yield await load_sensors(environment)


async def load_sensors(ingest: IngestEnvironment) -> IngestEnvironment:
    await ingest.put(
        "mapping.csv",
        f"sensor_name;sensor_uuid\nspiky;{SPIKY}\ncalm;{CALM}\nsparse;{SPARSE}\n",
    )
    assert (await run_job(ingest.client, "/ingest/mapping"))["status"] == "succeeded"
    sparse = clean_series(10, seed=23)
    lines = [
        *csv_lines(SPIKY, spiky_series()),
        *csv_lines(CALM, clean_series(POINTS, seed=CALM_SEED)),
        *csv_lines(SPARSE, sparse),
    ]
    body = "timestamp;sensor_uuid;sensor_value\n" + "\n".join(lines)
    await ingest.put("Timeseries/series.csv", body)
    job = await run_job(ingest.client, "/ingest/timeseries")
    assert job["rows_inserted"] == 2 * POINTS + 10, job
    assert np.all(np.diff(spiky_series().timestamps) > 0)
    return ingest
