"""Several uvicorn workers with PROMETHEUS_MULTIPROC_DIR: any worker's /metrics counts
the requests of all of them. A real server process, as in production."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from prometheus_client.multiprocess import MultiProcessCollector

from app.core.security import API_KEY_HEADER
from app.devstack.ports import free_port_block
from tests.conftest import IngestEnvironment
from tests.helpers import TEST_KEY, ServerProcess
from tests.metrics.test_router import scrape, value

BURST = 20
HEALTHZ = {"method": "GET", "route": "/healthz", "status": "200"}


def healthz_counts_by_worker(metrics_dir: Path) -> dict[str, float]:
    """GET /healthz requests each worker process recorded, read from its own file."""
    counts = {}
    for path in metrics_dir.glob("histogram_*.db"):
        (family,) = [
            family
            for family in MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
            if family.name == "sensor_http_request_duration_seconds"
        ]
        counts[path.name] = sum(
            sample.value
            for sample in family.samples
            if sample.name.endswith("_count") and sample.labels == HEALTHZ
        )
    return counts


async def test_every_worker_reports_the_requests_of_all_workers(
    ingest: IngestEnvironment, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    server = ServerProcess(
        ingest.settings,
        free_port_block((0,)),
        tmp_path / "server.log",
        environment={
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "ANALYSIS_WORKERS": "1",
            "ANALYSIS_PREWARM": "false",
        },
    )
    # A new connection per request, many at once, so that both workers accept some: the
    # kernel decides which, so bursts go on until each worker has served /healthz.
    fresh_connections = httpx.Limits(max_keepalive_connections=0)
    sent = 0
    try:
        await server.start()
        async with httpx.AsyncClient(
            base_url=server.base_url,
            limits=fresh_connections,
            timeout=30,
            headers={API_KEY_HEADER: TEST_KEY},
        ) as client:
            for _ in range(20):
                responses = await asyncio.gather(*(client.get("/healthz") for _ in range(BURST)))
                assert {response.status_code for response in responses} == {200}
                sent += BURST
                by_worker = healthz_counts_by_worker(metrics_dir)
                if len(by_worker) == 2 and all(by_worker.values()):
                    break
            assert len(by_worker) == 2, by_worker
            assert all(by_worker.values()), by_worker
            # Whichever worker answers the scrape, it counts every worker's requests.
            for _ in range(6):
                samples = await scrape(client)
                assert (
                    value(samples, "sensor_http_request_duration_seconds_count", **HEALTHZ) == sent
                )
    finally:
        server.stop()
    # Every line the workers wrote is JSON; uvicorn wrote no access lines of its own.
    records = [json.loads(line) for line in (tmp_path / "server.log").read_text().splitlines()]
    access = [record for record in records if record["logger"] == "app.access"]
    assert sum(record["path"] == "/healthz" for record in access) == sent
    assert not [record for record in records if record["logger"] == "uvicorn.access"]
