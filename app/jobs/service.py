"""Running background jobs: one active job per kind across all replicas, progress written
to the job row, cooperative cancellation at batch boundaries, recovery after a crash.

The guard is a PostgreSQL advisory lock held on a dedicated connection for the whole job.
PostgreSQL releases it the moment the owning process dies, so a lock we can take means no
live process is running that kind of job: any job still marked running is abandoned. It
also goes when that connection does (a database restart), so the job then stops, failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from app.core.db import CONNECTION_LOST_ERRORS, Connection
from app.core.logs import job_id_var
from app.jobs import repository
from app.jobs.exceptions import JobAlreadyFinished, JobAlreadyRunning, JobNotFound
from app.jobs.repository import MAX_REPORTED_ERRORS, JobCounters
from app.jobs.schemas import Job, JobError, JobKind, JobStatus

logger = logging.getLogger(__name__)

# Fixed and shared by every replica; one per kind so that different kinds run side by side.
LOCK_KEYS = {
    JobKind.INGEST_MAPPING: 7_402_113_101,
    JobKind.INGEST_TIMESERIES: 7_402_113_102,
    JobKind.ANOMALY_SCAN: 7_402_113_103,
}
ABANDONED_REASON = "the process running this job stopped before it finished"
SHUTDOWN_REASON = "the service shut down"
LEASE_LOST_REASON = (
    "lost the metadata database connection that holds this job's lock (a database restart?); "
    "stopped at a batch boundary: what was committed is kept and a new job resumes after it"
)


class JobCancelled(Exception):
    """Raised inside a job at a batch boundary once cancellation was requested."""


class JobAborted(Exception):
    """The job gives up on purpose (e.g. on_error=abort); the message is the reason."""


@dataclass
class JobContext:
    """What a job's work function sees: its parameters, counters and cancellation."""

    job_id: UUID
    kind: JobKind
    params: dict[str, Any]
    counters: JobCounters = field(default_factory=JobCounters)
    result: dict[str, Any] = field(default_factory=dict)
    rejected_rows_key: str | None = None
    errors: list[JobError] = field(default_factory=list)
    error_count: int = 0
    saved_errors: int = 0
    cancel_reason: str | None = None
    abort_reason: str | None = None
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)

    def report_error(self, error: JobError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)

    def request_cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.cancel_event.set()

    def request_abort(self, reason: str) -> None:
        """Like a cancel, but the job ends failed: it cannot go on, nobody asked it to stop."""
        if self.cancel_reason is None and self.abort_reason is None:
            self.abort_reason = reason
        self.cancel_event.set()

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            if self.abort_reason is not None:
                raise JobAborted(self.abort_reason)
            raise JobCancelled(self.cancel_reason or "cancelled")


JobWork = Callable[[JobContext], Awaitable[None]]


class JobLease:
    """The advisory lock of one job kind, on a connection of its own."""

    def __init__(self, connection: asyncpg.Connection, key: int) -> None:
        self._connection = connection
        self._key = key
        self._released = False

    @classmethod
    async def try_acquire(cls, dsn: str, kind: JobKind) -> JobLease | None:
        connection = await asyncpg.connect(dsn, timeout=10)
        key = LOCK_KEYS[kind]
        if await connection.fetchval("SELECT pg_try_advisory_lock($1)", key):
            return cls(connection, key)
        await connection.close()
        return None

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call `callback` if the connection, and with it the lock, goes while held."""

        def lost(_: object) -> None:
            if not self._released:
                callback()

        self._connection.add_termination_listener(lost)

    async def release(self) -> None:
        self._released = True
        with contextlib.suppress(asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
            await self._connection.execute("SELECT pg_advisory_unlock($1)", self._key)
        await self._connection.close()


def job_from_record(record: asyncpg.Record, errors: list[JobError]) -> Job:
    return Job.model_validate({**dict(record), "errors": errors})


class JobSupervisor:
    """Starts jobs as asyncio tasks of this process and keeps them until they finish."""

    def __init__(
        self,
        metadata_pool: asyncpg.Pool,
        metadata_dsn: str,
        progress_interval: float = 0.5,
        record_retry_seconds: float = 60.0,
    ) -> None:
        self._pool = metadata_pool
        self._dsn = metadata_dsn
        self._progress_interval = progress_interval
        self._record_retry_seconds = record_retry_seconds
        self._running: dict[UUID, tuple[asyncio.Task[None], JobContext]] = {}
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"

    async def start(self, kind: JobKind, params: dict[str, Any], work: JobWork) -> UUID:
        lease = await JobLease.try_acquire(self._dsn, kind)
        if lease is None:
            async with self._pool.acquire() as connection:
                raise JobAlreadyRunning(
                    kind.value, await repository.active_job_id(connection, kind)
                )
        job_id = uuid.uuid4()
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                abandoned = await repository.fail_abandoned_jobs(connection, kind, ABANDONED_REASON)
                await repository.insert_running_job(
                    connection, job_id, kind, params, self.worker_id
                )
        except BaseException:
            await lease.release()
            raise
        if abandoned:
            logger.warning("marked abandoned %s jobs failed: %s", kind, abandoned)
        context = JobContext(job_id=job_id, kind=kind, params=params)
        # Without its lock the job is no longer alone: another replica may start the same
        # kind and would take this one for abandoned.
        lease.on_lost(lambda: self._lease_lost(context))
        task = asyncio.create_task(self._run(context, lease, work), name=f"job-{job_id}")
        self._running[job_id] = (task, context)
        return job_id

    async def wait(self, job_id: UUID) -> None:
        """Until a job of this process has finished (for the CLI and tests)."""
        running = self._running.get(job_id)
        if running is not None:
            await asyncio.shield(running[0])

    def live_context(self, job_id: UUID) -> JobContext | None:
        running = self._running.get(job_id)
        return running[1] if running else None

    async def cancel(self, job_id: UUID) -> None:
        async with self._pool.acquire() as connection:
            if await repository.request_cancel(connection, job_id) is None:
                record = await repository.fetch_job(connection, job_id)
                if record is None:
                    raise JobNotFound(job_id)
                raise JobAlreadyFinished(job_id, record["status"])
        # A job of this process stops at once; another replica's sees the flag within a
        # progress interval.
        context = self.live_context(job_id)
        if context is not None:
            context.request_cancel("cancelled by request")

    async def recover_abandoned(self) -> None:
        """At startup: jobs left running by a dead process are marked failed."""
        for kind in JobKind:
            lease = await JobLease.try_acquire(self._dsn, kind)
            if lease is None:
                continue  # another live replica runs this kind
            try:
                async with self._pool.acquire() as connection:
                    failed = await repository.fail_abandoned_jobs(
                        connection, kind, ABANDONED_REASON
                    )
                if failed:
                    logger.warning("marked abandoned %s jobs failed: %s", kind, failed)
            finally:
                await lease.release()

    async def shutdown(self, grace_seconds: float = 5.0) -> None:
        """Stop every running job at its next batch boundary and record it as cancelled;
        a job still running after `grace_seconds` is interrupted (and recorded so too)."""
        for _, context in self._running.values():
            context.request_cancel(SHUTDOWN_REASON)
        tasks = [task for task, _ in self._running.values()]
        if tasks:
            logger.info(
                "shutting down: stopping %d running job(s) at a batch boundary, grace %gs",
                len(tasks),
                grace_seconds,
            )
            _, pending = await asyncio.wait(tasks, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _run(self, context: JobContext, lease: JobLease, work: JobWork) -> None:
        # This task runs in a copy of the starting request's context: from here on, every
        # record it and the tasks it starts log carries the job id, next to the id of the
        # request that started the job.
        job_id_var.set(str(context.job_id))
        logger.info("job %s (%s) started: %s", context.job_id, context.kind, context.params)
        reporter = asyncio.create_task(self._report_progress(context))
        status, reason = JobStatus.SUCCEEDED, None
        try:
            await work(context)
            if context.counters.rows_rejected or context.error_count:
                status = JobStatus.COMPLETED_WITH_ERRORS
        except JobCancelled as cancelled:
            status, reason = JobStatus.CANCELLED, str(cancelled)
        except JobAborted as aborted:
            status, reason = JobStatus.FAILED, str(aborted)
        except asyncio.CancelledError:
            status, reason = JobStatus.CANCELLED, context.cancel_reason or "interrupted"
        except Exception as error:
            logger.exception("job %s failed", context.job_id)
            status, reason = JobStatus.FAILED, f"{type(error).__name__}: {error}"
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            try:
                await self._record_end(context, status, reason)
            except Exception:
                logger.exception("could not record the end of job %s", context.job_id)
            finally:
                await lease.release()
                self._running.pop(context.job_id, None)
        logger.info(
            "job %s (%s) finished: %s %s", context.job_id, context.kind, status, reason or ""
        )

    def _lease_lost(self, context: JobContext) -> None:
        logger.warning("job %s lost its lock connection; stopping it", context.job_id)
        context.request_abort(LEASE_LOST_REASON)

    async def _record_end(self, context: JobContext, status: JobStatus, reason: str | None) -> None:
        """Final counters and status. The job may have ended *because* the database went
        away, so this reconnects and retries until it is back (within a bound)."""

        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            logger.warning(
                "could not record the end of job %s (%s: %s); retrying",
                context.job_id,
                type(error).__name__,
                error,
            )

        async for attempt in AsyncRetrying(
            stop=stop_after_delay(self._record_retry_seconds),
            wait=wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.2),
            retry=retry_if_exception_type(CONNECTION_LOST_ERRORS),
            before_sleep=log_retry,
            reraise=True,
        ):
            with attempt:
                await self._save_progress(context)
                async with self._pool.acquire() as connection:
                    await repository.finish_job(
                        connection, context.job_id, status, reason, context.rejected_rows_key
                    )

    async def _save_progress(self, context: JobContext) -> None:
        new_errors = context.errors[context.saved_errors :]
        async with self._pool.acquire() as connection:
            cancel_requested = await repository.save_progress(
                connection,
                context.job_id,
                context.counters,
                context.result,
                new_errors,
                first_error_seq=context.saved_errors,
            )
        context.saved_errors += len(new_errors)
        if cancel_requested:
            context.request_cancel("cancelled by request")

    async def _report_progress(self, context: JobContext) -> None:
        while True:
            await asyncio.sleep(self._progress_interval)
            try:
                await self._save_progress(context)
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                logger.warning("could not save progress of job %s", context.job_id, exc_info=True)


async def get_job(connection: Any, job_id: UUID) -> Job:
    record = await repository.fetch_job(connection, job_id)
    if record is None:
        raise JobNotFound(job_id)
    errors = await repository.fetch_errors(connection, [job_id])
    return job_from_record(record, errors[job_id])


async def count_jobs(connection: Connection) -> dict[tuple[str, str], int]:
    """How many jobs there are of each (kind, status), 0 for pairs without any. A kind or
    status this version does not know (a newer replica's) is counted under its own name."""
    counts = dict.fromkeys(
        ((kind.value, status.value) for kind in JobKind for status in JobStatus), 0
    )
    for row in await repository.count_by_kind_and_status(connection):
        counts[row["kind"], row["status"]] = row["jobs"]
    return counts
