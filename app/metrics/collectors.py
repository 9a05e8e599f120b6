"""Gauges read at scrape time: the database pools, the analysis processes, and the jobs
table. Their values are taken on the event loop (pools and the analysis pool belong to
it) into a snapshot; the exposition text is rendered from the snapshot in a thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import asyncpg
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from app.anomalies.analysis_pool import AnalysisPool


@dataclass(frozen=True)
class PoolUsage:
    name: str
    connections: int
    idle: int
    max_connections: int

    @classmethod
    def of(cls, name: str, pool: asyncpg.Pool) -> PoolUsage:
        return cls(name, pool.get_size(), pool.get_idle_size(), pool.get_max_size())


@dataclass(frozen=True)
class AnalysisUsage:
    workers: int
    requests: int
    max_requests: int
    computations: int

    @classmethod
    def of(cls, analysis: AnalysisPool) -> AnalysisUsage:
        return cls(analysis.workers, analysis.pending, analysis.max_pending, analysis.in_flight)


@dataclass(frozen=True)
class Snapshot:
    """What one scrape saw. `job_counts` is None when the jobs table could not be read."""

    pools: list[PoolUsage]
    analysis: AnalysisUsage
    job_counts: Mapping[tuple[str, str], int] | None

    def collect(self) -> Iterator[Metric]:
        yield from self._pools()
        yield from self._analysis()
        yield from self._jobs()

    def _pools(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "sensor_db_pool_connections",
            "Connections the asyncpg pool holds open (idle or in use).",
            labels=["pool"],
        )
        idle = GaugeMetricFamily(
            "sensor_db_pool_idle_connections",
            "Connections of the pool waiting to be borrowed.",
            labels=["pool"],
        )
        most = GaugeMetricFamily(
            "sensor_db_pool_max_connections",
            "Most connections the pool opens (DB_POOL_MAX_SIZE).",
            labels=["pool"],
        )
        for pool in self.pools:
            connections.add_metric([pool.name], pool.connections)
            idle.add_metric([pool.name], pool.idle)
            most.add_metric([pool.name], pool.max_connections)
        yield from (connections, idle, most)

    def _analysis(self) -> Iterator[Metric]:
        usage = self.analysis
        yield GaugeMetricFamily(
            "sensor_analysis_workers",
            "Processes fitting anomaly models (ANALYSIS_WORKERS).",
            value=usage.workers,
        )
        yield GaugeMetricFamily(
            "sensor_analysis_requests",
            "Anomaly requests in progress or waiting for a process; at "
            "sensor_analysis_max_requests further ones get 503.",
            value=usage.requests,
        )
        yield GaugeMetricFamily(
            "sensor_analysis_max_requests",
            "Anomaly requests allowed in progress or waiting (ANALYSIS_MAX_PENDING).",
            value=usage.max_requests,
        )
        yield GaugeMetricFamily(
            "sensor_analysis_computations",
            "Computations (requests' and fleet scans') handed to the analysis processes and "
            "not finished: running, or queued for a process.",
            value=usage.computations,
        )

    def _jobs(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "sensor_jobs_query_success",
            "1 if this scrape could read the jobs table, 0 if not (then sensor_jobs is absent).",
            value=0 if self.job_counts is None else 1,
        )
        if self.job_counts is None:
            return
        # Read from the jobs table, not counted in this process: the table is the truth
        # across restarts (a process's counters start at 0 again) and across replicas (a
        # job runs in whichever replica started it, and is finished by recovery in another
        # if its process died). Every replica reports the same numbers: aggregate with
        # max(), not sum().
        family = GaugeMetricFamily(
            "sensor_jobs",
            "Background jobs in the jobs table, by kind and status (read at scrape time).",
            labels=["kind", "status"],
        )
        for (kind, status), count in sorted(self.job_counts.items()):
            family.add_metric([kind, status], count)
        yield family


class Exposition:
    """Several collectors exposed as one, for `generate_latest`."""

    def __init__(self, sources: Iterable[Collector]) -> None:
        self._sources = list(sources)

    def collect(self) -> Iterator[Metric]:
        for source in self._sources:
            yield from source.collect()
