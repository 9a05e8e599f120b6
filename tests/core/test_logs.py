"""Log output: JSON lines with the request id and job id, text for people, uvicorn's
loggers routed through the same handler."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime

import pytest

from app.core.config import Settings
from app.core.logs import HANDLER_NAME, ContextFilter, configure_logging
from tests.conftest import IngestEnvironment, running_app
from tests.helpers import run_job, service_log, wait_for_job

SENSOR = "00000000-0000-0000-0000-00000000000a"


async def test_json_access_line_has_the_request_fields(settings: Settings) -> None:
    async with running_app(settings) as client:
        with service_log() as log:
            response = await client.get(
                "/sensors/sensor_not_there", headers={"X-Request-ID": "trace-42"}
            )
    lines = [json.loads(text) for text in log.getvalue().splitlines()]
    (line,) = [line for line in lines if line["logger"] == "app.access"]
    duration = line.pop("duration_ms")
    time = datetime.fromisoformat(line.pop("time"))
    assert line == {
        "level": "INFO",
        "logger": "app.access",
        "message": f"GET /sensors/sensor_not_there 404 {duration:.1f} ms",
        "request_id": "trace-42",
        "method": "GET",
        "path": "/sensors/sensor_not_there",
        "route": "/sensors/{sensor_name}",
        "status": 404,
        "response_bytes": len(response.content),
    }
    assert 0 < duration < 5_000
    assert time.utcoffset() is not None


async def test_text_lines_end_with_the_request_id(settings: Settings) -> None:
    async with running_app(settings.model_copy(update={"log_format": "text"})) as client:
        with service_log() as log:
            await client.get("/healthz", headers={"X-Request-ID": "trace-43"})
    (line,) = [text for text in log.getvalue().splitlines() if " app.access: " in text]
    assert re.fullmatch(
        r"\S+ \S+ INFO app\.access: GET /healthz 200 \d+\.\d ms \[request_id=trace-43\]", line
    )


async def test_job_lines_carry_the_job_id_and_the_starting_request_id(
    ingest: IngestEnvironment,
) -> None:
    await ingest.put("mapping.csv", f"sensor_name;sensor_uuid\nsensor_a;{SENSOR}\n")
    with service_log() as log:
        started = await ingest.client.post("/ingest/mapping", headers={"X-Request-ID": "start-1"})
        first_job_id = started.json()["id"]
        await wait_for_job(ingest.client, first_job_id)
        job = await run_job(ingest.client, "/ingest/mapping")
    lines = [json.loads(text) for text in log.getvalue().splitlines()]
    job_lines = [line for line in lines if line.get("job_id") == first_job_id]
    assert [line["message"].split(":")[0] for line in job_lines] == [
        f"job {first_job_id} (ingest_mapping) started",
        f"job {first_job_id} (ingest_mapping) finished",
    ]
    assert {line["request_id"] for line in job_lines} == {"start-1"}
    # The next job's lines carry its own id, never the first one's.
    assert any(line.get("job_id") == job["id"] for line in lines)
    assert job["id"] != first_job_id


async def test_the_filter_gives_any_handler_the_ids(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(ContextFilter())
    async with running_app(settings) as client:
        with caplog.at_level(logging.INFO, logger="app.access"):
            await client.get("/healthz", headers={"X-Request-ID": "trace-44"})
    (record,) = [r for r in caplog.records if r.name == "app.access"]
    assert getattr(record, "request_id", None) == "trace-44"
    assert not hasattr(record, "job_id")


def test_configuring_twice_keeps_one_handler_and_routes_uvicorn_through_it(
    settings: Settings,
) -> None:
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(logging.NullHandler())
    configure_logging(settings)
    configure_logging(settings)
    root = logging.getLogger()
    assert [h.get_name() for h in root.handlers].count(HANDLER_NAME) == 1
    assert uvicorn_error.handlers == []
    assert uvicorn_error.propagate
    access = logging.getLogger("uvicorn.access")
    assert not access.hasHandlers()  # uvicorn then writes no access line of its own
    with service_log() as log:
        uvicorn_error.warning("Started server process [%d]", 1234)
    line = json.loads(log.getvalue())
    assert (line["logger"], line["level"], line["message"]) == (
        "uvicorn.error",
        "WARNING",
        "Started server process [1234]",
    )
