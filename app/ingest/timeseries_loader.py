"""The timeseries ingestion job: every CSV under the prefix into `readings`, exactly once.

Exactly-once comes from two things:
* each object is loaded in ONE transaction of the timeseries database, together with its
  ledger row (key, ETag, size) and its rejected rows. A crash rolls the object back
  entirely; a re-run skips exactly the objects whose transaction committed;
* (sensor_uuid, ts) is the primary key: a pair that is already stored is never written
  again (the stored value wins) and is counted as a duplicate.

Faults: when the object store fails, also mid-object (a reset, a stalled body), the
object is rolled back and loaded again from its first byte, up to INGEST_OBJECT_ATTEMPTS
times with exponential backoff; then it is reported on the job, which goes on with the
others unless the store no longer answers at all. A lost database connection ends the job
failed: its object in flight is rolled back and the next job resumes after the committed
ones.

Speed: blocks of ~8 MB are parsed into PostgreSQL's binary COPY format off the event loop
(vectorised, no Python loop per row), and several objects are loaded at once, so parsing
one overlaps with the COPY of another on the second core. A block is COPYed straight into
`readings` inside a savepoint; only a block that hits an already stored pair takes the
slower stage-and-merge path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.core.config import Settings
from app.core.db import CONNECTION_LOST_ERRORS, Connection
from app.core.lifespan import Resources
from app.ingest import repository
from app.ingest.parsing import (
    COPY_HEADER,
    COPY_TRAILER,
    CsvLayout,
    FileRejected,
    LineBlocks,
    ParsedBlock,
    ReadingsBlockParser,
    detect_layout,
)
from app.ingest.schemas import TimeseriesIngestRequest
from app.jobs.repository import MAX_REPORTED_ERRORS
from app.jobs.schemas import JobError
from app.jobs.service import JobAborted, JobCancelled, JobContext
from app.metrics import instruments
from app.metrics.instruments import IngestSource
from app.storage.s3 import (
    ObjectInfo,
    S3Client,
    StorageError,
    StorageUnavailable,
    check_bucket,
    list_objects,
    stream_object,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

REQUIRED_COLUMNS = ("timestamp", "sensor_uuid", "sensor_value")
DATA_SUFFIXES = (".csv", ".csv.gz")
REJECTED_PREFIX = "rejected/"
# An object that keeps needing partitions it cannot create mid-transaction is a bug.
MAX_PARTITION_RETRIES = 5
# The backoff doubles per attempt; beyond this, waiting longer only delays the report.
MAX_RETRY_WAIT_SECONDS = 60.0


async def with_storage_retries(
    settings: Settings, what: str, attempt: Callable[[], Awaitable[T]]
) -> T:
    """Run `attempt` again while the object store fails transiently, with exponential
    backoff and jitter, INGEST_OBJECT_ATTEMPTS times in all; then raise the last error.
    `attempt` must start from scratch: a transaction it opened has been rolled back."""

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.warning(
            "%s: attempt %d of %d failed (%s); retrying",
            what,
            state.attempt_number,
            settings.ingest_object_attempts,
            error,
        )

    backoff = settings.ingest_retry_backoff_seconds
    async for retry in AsyncRetrying(
        stop=stop_after_attempt(settings.ingest_object_attempts),
        wait=wait_exponential_jitter(
            multiplier=backoff, max=MAX_RETRY_WAIT_SECONDS, jitter=backoff
        ),
        retry=retry_if_exception_type(StorageUnavailable),
        before_sleep=log_retry,
        reraise=True,
    ):
        with retry:
            return await attempt()
    raise AssertionError("unreachable: tenacity reraises the last error")


def storage_failure(error: StorageError, settings: Settings) -> str:
    """The error and how often it was tried, for the reasons a job reports."""
    if isinstance(error, StorageUnavailable):
        attempts = settings.ingest_object_attempts
        return f"{error} (tried {attempts} time{'s' if attempts > 1 else ''})"
    return f"{error} (not retried: it cannot succeed)"


class _NeedPartitions(Exception):
    """A later block of an object reaches months without a partition; they can only be
    created while this connection holds no lock on `readings`, so the object restarts."""

    def __init__(self, lower_us: int, upper_us: int) -> None:
        self.lower_us, self.upper_us = lower_us, upper_us


@dataclass
class ObjectStats:
    rows_read: int = 0
    rows_inserted: int = 0
    rows_duplicate: int = 0
    rows_rejected: int = 0
    dst_ambiguous_by_order: int = 0
    dst_ambiguous_by_rule: int = 0
    dst_nonexistent_shifted: int = 0
    first_errors: list[JobError] = field(default_factory=list)
    # sensor uuid -> [count, first instant, last instant] of the rows inserted so far.
    inserted_by_sensor: dict[UUID, list[Any]] = field(default_factory=dict)

    def add_inserted(self, sensor: UUID, count: int, first: datetime, last: datetime) -> None:
        known = self.inserted_by_sensor.get(sensor)
        if known is None:
            self.inserted_by_sensor[sensor] = [count, first, last]
        else:
            known[0] += count
            known[1] = min(known[1], first)
            known[2] = max(known[2], last)

    def add_block(self, block: ParsedBlock, inserted: int) -> None:
        self.rows_read += block.rows_read
        self.rows_inserted += inserted
        self.rows_duplicate += block.duplicates_in_block + (block.rows_accepted - inserted)
        self.rows_rejected += len(block.rejected)
        self.dst_ambiguous_by_order += block.dst_ambiguous_by_order
        self.dst_ambiguous_by_rule += block.dst_ambiguous_by_rule
        self.dst_nonexistent_shifted += block.dst_nonexistent_shifted


def _utc(microseconds: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=microseconds)


def _months(lower_us: int, upper_us: int) -> range:
    """Month numbers (year * 12 + month - 1, UTC) from the one of lower to that of upper."""
    lower, upper = _utc(lower_us), _utc(upper_us)
    return range(lower.year * 12 + lower.month - 1, upper.year * 12 + upper.month)


def is_data_object(key: str) -> bool:
    lowered = key.lower()
    return lowered.endswith(DATA_SUFFIXES) and not key.startswith(REJECTED_PREFIX)


async def object_line_blocks(
    s3: S3Client, bucket: str, key: str, lines: LineBlocks
) -> AsyncIterator[tuple[bytes, int]]:
    """An object's complete lines in blocks (with the first line number of each), streamed
    and, for `.gz` keys, decompressed off the event loop."""
    loop = asyncio.get_running_loop()
    # wbits 47: accept gzip and zlib headers, as gzip(1) and Python's gzip write them.
    decompressor = zlib.decompressobj(47) if key.lower().endswith(".gz") else None
    # aclosing: a load that fails on the database side hands the S3 connection back now,
    # not when the abandoned generator is collected.
    async with contextlib.aclosing(stream_object(s3, bucket, key)) as chunks:
        async for chunk in chunks:
            if decompressor is not None:
                chunk = await loop.run_in_executor(None, decompressor.decompress, chunk)
            for item in lines.feed(chunk):
                yield item
    if decompressor is not None:
        tail = decompressor.flush()
        if not decompressor.eof:
            raise FileRejected("the gzip stream is truncated")
        for item in lines.feed(tail):
            yield item
    for item in lines.finish():
        yield item


class PartitionKeeper:
    """Creates monthly partitions once per job, on a connection of its own, so that the
    CREATE never waits on a transaction of the worker that asked for it."""

    def __init__(self, connection: asyncpg.Connection, enabled: bool) -> None:
        self._connection = connection
        self._enabled = enabled
        self._months: set[int] = set()
        self._lock = asyncio.Lock()

    def missing(self, lower_us: int, upper_us: int) -> bool:
        if not self._enabled:
            return False
        return not self._months.issuperset(_months(lower_us, upper_us))

    async def ensure(self, lower_us: int, upper_us: int) -> None:
        if not self.missing(lower_us, upper_us):
            return
        async with self._lock:
            await repository.ensure_partitions(self._connection, _utc(lower_us), _utc(upper_us))
            self._months.update(_months(lower_us, upper_us))


class TimeseriesLoader:
    def __init__(
        self, context: JobContext, resources: Resources, request: TimeseriesIngestRequest
    ) -> None:
        self.context = context
        self.resources = resources
        self.settings = resources.settings
        self.request = request
        self.prefix = (
            request.prefix if request.prefix is not None else self.settings.timeseries_prefix
        )
        self.ambiguous = request.dst_ambiguous or self.settings.dst_ambiguous
        self.nonexistent = request.dst_nonexistent or self.settings.dst_nonexistent
        self.known_uuids: list[str] = []
        self._stop_reason: JobCancelled | JobAborted | None = None
        self.result: dict[str, Any] = {
            "prefix": self.prefix,
            "objects_skipped": 0,
            "objects_ignored": 0,
            "files_rejected": 0,
            "objects_failed": 0,
            "dst_ambiguous_by_order": 0,
            "dst_ambiguous_by_rule": 0,
            "dst_nonexistent_shifted": 0,
            "dst_rules": {"ambiguous": self.ambiguous, "nonexistent": self.nonexistent},
        }
        context.result = self.result

    async def run(self) -> None:
        try:
            await self._load_all()
        finally:
            try:
                await self._export_rejections()
            except Exception:
                # Never mask why the job ended; the rows stay in ingest_rejections.
                logger.exception("could not export the rejected rows of %s", self.context.job_id)

    async def _load_all(self) -> None:
        async with self.resources.metadata_pool.acquire() as connection:
            self.known_uuids = await repository.known_sensor_uuids(connection)
        if not self.known_uuids:
            raise JobAborted("the sensor mapping is empty: run the mapping ingestion first")

        bucket = self.settings.s3_bucket
        try:
            listed = await with_storage_retries(
                self.settings, f"listing s3://{bucket}/{self.prefix}", self._list_objects
            )
        except StorageError as error:
            raise JobAborted(
                f"could not list the objects: {storage_failure(error, self.settings)}"
            ) from None
        objects = [info for info in listed if is_data_object(info.key)]
        self.result["objects_ignored"] = len(listed) - len(objects)
        counters = self.context.counters
        counters.objects_total = len(objects)
        counters.bytes_total = sum(o.size for o in objects)

        async with self.resources.timeseries_pool.acquire() as connection:
            ledger = (
                {}
                if self.request.reload
                else await repository.fetch_ledger(connection, [o.key for o in objects])
            )
            storage = await repository.readings_storage(connection)
        pending = [o for o in objects if ledger.get(o.key) != (o.etag, o.size)]
        skipped = len(objects) - len(pending)
        self.result["objects_skipped"] = skipped
        counters.objects_done = skipped
        counters.bytes_done = counters.bytes_total - sum(o.size for o in pending)

        queue: asyncio.Queue[ObjectInfo] = asyncio.Queue()
        for info in sorted(pending, key=lambda o: o.key):
            queue.put_nowait(info)
        keeper_connection = await asyncpg.connect(self.settings.timeseries_database_url)
        try:
            keeper = PartitionKeeper(keeper_connection, enabled=storage == "postgresql-partitioned")
            workers = min(self.settings.ingest_workers, max(1, len(pending)))
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(self._worker(queue, keeper))
            if self._stop_reason is not None:
                raise self._stop_reason
            if not queue.empty():
                self.context.check_cancelled()
        except* Exception as errors:
            # Surface the first reason the job stopped (cancelled, aborted, failed), not a
            # group of them: the other workers only stopped because of it.
            raise errors.exceptions[0] from None
        finally:
            await keeper_connection.close()

    async def _list_objects(self) -> list[ObjectInfo]:
        bucket, prefix = self.settings.s3_bucket, self.prefix
        return [info async for info in list_objects(self.resources.s3, bucket, prefix)]

    async def _worker(self, queue: asyncio.Queue[ObjectInfo], keeper: PartitionKeeper) -> None:
        async with self.resources.timeseries_pool.acquire() as connection:
            while not queue.empty() and not self._stopping():
                info = queue.get_nowait()
                try:
                    await self._load_object_with_retries(connection, info, keeper)
                except (JobCancelled, JobAborted) as stop:
                    # Only this worker's object was rolled back. The others finish and
                    # count the object they are committing: cancelling them mid-commit
                    # could leave a committed object out of the job's counters.
                    self._stop_reason = self._stop_reason or stop
                    return

    def _stopping(self) -> bool:
        return self._stop_reason is not None or self.context.cancel_event.is_set()

    async def _load_object_with_retries(
        self, connection: Connection, info: ObjectInfo, keeper: PartitionKeeper
    ) -> None:
        async def attempt() -> ObjectStats:
            # A cancel that came during the backoff stops the job instead of a retry.
            self.context.check_cancelled()
            return await self._load_object_making_partitions(connection, info, keeper)

        try:
            stats = await with_storage_retries(self.settings, info.key, attempt)
        except StorageError as error:
            await self._report_unreadable(info, error)
            return
        except CONNECTION_LOST_ERRORS as error:
            raise JobAborted(
                f"lost the timeseries database while loading {info.key} "
                f"({type(error).__name__}: {error}); that object was rolled back, the objects "
                "committed before are kept and a new job resumes after them"
            ) from error
        self._commit_stats(info, stats)

    async def _load_object_making_partitions(
        self, connection: Connection, info: ObjectInfo, keeper: PartitionKeeper
    ) -> ObjectStats:
        for _ in range(MAX_PARTITION_RETRIES):
            try:
                return await self._load_object(connection, info, keeper)
            except _NeedPartitions as need:
                await keeper.ensure(need.lower_us, need.upper_us)
        raise RuntimeError(
            f"{info.key}: partitions kept missing after {MAX_PARTITION_RETRIES} tries"
        )

    async def _report_unreadable(self, info: ObjectInfo, error: StorageError) -> None:
        """The object stays out of the ledger, so the next job tries it again. The job goes
        on with the other objects, unless the store has stopped answering altogether: then
        each of them would only fail the same way, slowly."""
        failure = storage_failure(error, self.settings)
        self.result["objects_failed"] += 1
        self.context.report_error(
            JobError(
                object_key=info.key,
                line_number=None,
                reason=f"not loaded: {failure}; a new job tries it again",
            )
        )
        if isinstance(error, StorageUnavailable):
            try:
                await check_bucket(self.resources.s3, self.settings.s3_bucket)
            except StorageError as unreachable:
                raise JobAborted(
                    f"the object store stopped answering: {unreachable}; {info.key} was not "
                    f"loaded: {failure}; a new job resumes after the committed objects"
                ) from None

    async def _load_object(
        self, connection: Connection, info: ObjectInfo, keeper: PartitionKeeper
    ) -> ObjectStats:
        try:
            async with connection.transaction():
                stats = await self._copy_object(connection, info, keeper)
                await repository.add_to_sensor_stats(
                    connection,
                    [
                        (sensor, first, last, count)
                        for sensor, (count, first, last) in stats.inserted_by_sensor.items()
                    ],
                )
                await self._record(connection, info, "loaded", stats)
            return stats
        except FileRejected as rejected:
            # Whatever was copied before the file turned out unusable (e.g. a truncated
            # gzip stream) was rolled back with the transaction above.
            async with connection.transaction():
                stats = await self._reject_file(connection, info, rejected)
                await self._record(connection, info, "file_rejected", stats)
            self.result["files_rejected"] += 1
            return stats

    async def _copy_object(
        self, connection: Connection, info: ObjectInfo, keeper: PartitionKeeper
    ) -> ObjectStats:
        stats = ObjectStats()
        loop = asyncio.get_running_loop()
        parser: ReadingsBlockParser | None = None
        lines = LineBlocks()
        wrote_readings = False
        async for block, first_line in object_line_blocks(
            self.resources.s3, self.settings.s3_bucket, info.key, lines
        ):
            if parser is None:
                parser = self._parser_for(lines)
            parsed = await loop.run_in_executor(None, parser.parse, block, first_line)
            wrote_readings |= await self._write_block(
                connection, info, parsed, stats, keeper, wrote_readings
            )
            self.context.check_cancelled()
        if parser is None:
            self._parser_for(lines)  # an empty object, or a lone header line
        return stats

    async def _record(
        self, connection: Connection, info: ObjectInfo, outcome: str, stats: ObjectStats
    ) -> None:
        await repository.record_object(
            connection,
            key=info.key,
            etag=info.etag,
            size=info.size,
            job_id=self.context.job_id,
            outcome=outcome,
            rows_read=stats.rows_read,
            rows_inserted=stats.rows_inserted,
            rows_duplicate=stats.rows_duplicate,
            rows_rejected=stats.rows_rejected,
        )

    def _parser_for(self, lines: LineBlocks) -> ReadingsBlockParser:
        if lines.header is None:
            raise FileRejected("the file is empty: no header line")
        layout: CsvLayout = detect_layout(lines.header, REQUIRED_COLUMNS)
        return ReadingsBlockParser(
            layout,
            self.known_uuids,
            self.settings.source_zone,
            ambiguous=self.ambiguous,
            nonexistent=self.nonexistent,
            group_by_sensor=True,
        )

    async def _write_block(
        self,
        connection: Connection,
        info: ObjectInfo,
        parsed: ParsedBlock,
        stats: ObjectStats,
        keeper: PartitionKeeper,
        wrote_readings: bool,
    ) -> bool:
        inserted = 0
        if parsed.rows_accepted:
            assert parsed.min_ts_us is not None
            assert parsed.max_ts_us is not None
            if keeper.missing(parsed.min_ts_us, parsed.max_ts_us):
                if wrote_readings:
                    raise _NeedPartitions(parsed.min_ts_us, parsed.max_ts_us)
                await keeper.ensure(parsed.min_ts_us, parsed.max_ts_us)
            payload = COPY_HEADER + parsed.copy_rows + COPY_TRAILER
            try:
                async with connection.transaction():
                    await repository.copy_readings(connection, payload)
            except asyncpg.UniqueViolationError:
                for row in await repository.merge_readings(connection, payload):
                    stats.add_inserted(
                        row["sensor_uuid"], row["count"], row["first_ts"], row["last_ts"]
                    )
                    inserted += row["count"]
            else:
                inserted = parsed.rows_accepted
                for summary in parsed.by_sensor:
                    stats.add_inserted(
                        summary.sensor_uuid,
                        summary.count,
                        _utc(summary.first_us),
                        _utc(summary.last_us),
                    )
        if parsed.rejected:
            await repository.insert_rejections(
                connection,
                self.context.job_id,
                info.key,
                [(r.line_number, r.reason, r.raw_line) for r in parsed.rejected],
            )
            for rejection in parsed.rejected[: MAX_REPORTED_ERRORS - len(stats.first_errors)]:
                stats.first_errors.append(
                    JobError(
                        object_key=info.key,
                        line_number=rejection.line_number,
                        reason=rejection.reason,
                    )
                )
        stats.add_block(parsed, inserted)
        self._enforce_error_policy(info, parsed, stats)
        return parsed.rows_accepted > 0

    def _enforce_error_policy(
        self, info: ObjectInfo, parsed: ParsedBlock, stats: ObjectStats
    ) -> None:
        if not parsed.rejected:
            return
        first = parsed.rejected[0]
        if self.request.on_error == "abort":
            raise JobAborted(
                f"on_error=abort: {info.key} line {first.line_number}: {first.reason} "
                "(this object was rolled back)"
            )
        limit = self.request.max_errors
        if limit is not None and self.context.counters.rows_rejected + stats.rows_rejected > limit:
            raise JobAborted(
                f"more than max_errors={limit} rows rejected; last: {info.key} line "
                f"{first.line_number}: {first.reason} (this object was rolled back)"
            )

    async def _reject_file(
        self, connection: Connection, info: ObjectInfo, rejected: FileRejected
    ) -> ObjectStats:
        # Nothing of a rejected file is loaded, but its rows are still counted and it is
        # reported once, at line 1, with the reason.
        lines = LineBlocks()
        data_lines = await self._count_data_lines(info, lines)
        header = (lines.header or b"").decode("utf-8", errors="replace")
        reason = f"file rejected: {rejected.reason}"
        await repository.insert_rejections(
            connection, self.context.job_id, info.key, [(1, reason, header)]
        )
        return ObjectStats(
            rows_read=data_lines,
            rows_rejected=data_lines,
            first_errors=[JobError(object_key=info.key, line_number=1, reason=reason)],
        )

    async def _count_data_lines(self, info: ObjectInfo, lines: LineBlocks) -> int:
        """Non-blank lines after the header, counted without parsing them."""
        count = 0
        try:
            async for block, _ in object_line_blocks(
                self.resources.s3, self.settings.s3_bucket, info.key, lines
            ):
                pieces = block.split(b"\n")
                count += len(pieces) - pieces.count(b"") - pieces.count(b"\r")
        except FileRejected:
            pass  # a truncated stream: count what could be read
        return count

    def _commit_stats(self, info: ObjectInfo, stats: ObjectStats) -> None:
        """Called once the object's transaction committed, so the metrics, like the job's
        counters, never count rows that were rolled back."""
        instruments.count_rows(
            IngestSource.TIMESERIES,
            inserted=stats.rows_inserted,
            duplicate=stats.rows_duplicate,
            rejected=stats.rows_rejected,
        )
        instruments.count_bytes(IngestSource.TIMESERIES, info.size)
        counters = self.context.counters
        counters.objects_done += 1
        counters.bytes_done += info.size
        counters.rows_read += stats.rows_read
        counters.rows_inserted += stats.rows_inserted
        counters.rows_duplicate += stats.rows_duplicate
        counters.rows_rejected += stats.rows_rejected
        for name in ("dst_ambiguous_by_order", "dst_ambiguous_by_rule", "dst_nonexistent_shifted"):
            self.result[name] += getattr(stats, name)
        for error in stats.first_errors:
            self.context.report_error(error)

    async def _export_rejections(self) -> None:
        """Write every rejected row of this job to rejected/<job id>.csv in the bucket."""
        job_id = self.context.job_id
        async with self.resources.timeseries_pool.acquire() as connection:
            if not await repository.has_rejections(connection, job_id):
                return
            key = f"{REJECTED_PREFIX}{job_id}.csv"
            with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:

                async def write(data: bytes) -> None:
                    spool.write(data)

                await repository.export_rejections(connection, job_id, write)
                spool.seek(0)
                await self.resources.s3.upload_fileobj(spool, self.settings.s3_bucket, key)
        self.context.rejected_rows_key = key
