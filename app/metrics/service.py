"""What GET /metrics answers: the counters and histograms of this process (or of every
worker process, in multiprocess mode) and the gauges of the moment."""

from __future__ import annotations

import asyncio
import logging
import os

import asyncpg
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from app.core.lifespan import Resources
from app.jobs import service as jobs_service
from app.metrics.collectors import AnalysisUsage, Exposition, PoolUsage, Snapshot

logger = logging.getLogger(__name__)


def multiprocess_mode() -> bool:
    """Whether prometheus-client keeps metrics in files shared by worker processes.

    PROMETHEUS_MULTIPROC_DIR is prometheus-client's own variable, read from the environment
    (not from `.env`) when it is first imported, so it is not one of our Settings; this asks
    the same question it asked.
    """
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ or "prometheus_multiproc_dir" in os.environ


def _counted_metrics() -> Collector:
    if multiprocess_mode():
        # Every worker's counters and histograms, dead workers' included (a counter must
        # never go down). Process metrics (CPU, memory) are per process and not exposed.
        return MultiProcessCollector(None)  # type: ignore[no-untyped-call]
    # This process's metrics, with the client's process, platform and GC collectors.
    return REGISTRY


async def _job_counts(resources: Resources) -> dict[tuple[str, str], int] | None:
    """The jobs table's counts, or None: /metrics still answers while the database is
    down, since that is when it is needed. Bounded like a readiness check."""
    try:
        async with (
            asyncio.timeout(resources.settings.readiness_timeout_seconds),
            resources.metadata_pool.acquire() as connection,
        ):
            return await jobs_service.count_jobs(connection)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        logger.warning("/metrics could not count the jobs", exc_info=True)
        return None


async def render(resources: Resources) -> bytes:
    """The Prometheus text exposition (format 0.0.4)."""
    snapshot = Snapshot(
        pools=[
            PoolUsage.of("metadata", resources.metadata_pool),
            PoolUsage.of("timeseries", resources.timeseries_pool),
        ],
        analysis=AnalysisUsage.of(resources.analysis),
        job_counts=await _job_counts(resources),
    )
    exposition = Exposition([_counted_metrics(), snapshot])
    # Rendering is pure Python: ~15 ms for 90 (route, status) pairs of the histogram
    # (measured), plus reading every worker's files in multiprocess mode. In a thread, the
    # event loop still gets the GIL every switch interval instead of stalling throughout.
    return await asyncio.to_thread(generate_latest, exposition)
