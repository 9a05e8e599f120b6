"""The mapping ingestion job: `sensor_name;sensor_uuid` into the sensor registry.

The file is streamed into a staging table with COPY, then merged in one transaction. A name
with two uuids, or a uuid with two names (in the file, or against the registry), is a
conflict: reported, never written. Pairs already registered are left alone, so a re-run
is a no-op. When the object store fails, the transaction is rolled back and the file read
again from its start (INGEST_OBJECT_ATTEMPTS in all), as for a timeseries object.
"""

from __future__ import annotations

import csv
import io
import tempfile
import uuid
from dataclasses import dataclass

from app.core.lifespan import Resources
from app.ingest import repository
from app.ingest.parsing import CsvLayout, FileRejected, LineBlocks, detect_layout
from app.ingest.timeseries_loader import (
    REJECTED_PREFIX,
    object_line_blocks,
    storage_failure,
    with_storage_retries,
)
from app.jobs.schemas import JobError
from app.jobs.service import JobAborted, JobContext
from app.metrics import instruments
from app.metrics.instruments import IngestSource
from app.storage.s3 import ObjectInfo, StorageError, head_object

REQUIRED_COLUMNS = ("sensor_name", "sensor_uuid")


def parse_mapping_block(
    block: bytes, first_line: int, layout: CsvLayout
) -> tuple[list[tuple[int, str, uuid.UUID, str]], list[tuple[int, str, str]]]:
    """(line, name, uuid, raw line) rows and (line, reason, raw line) rejections."""
    accepted, rejected = [], []
    text = block.decode("utf-8", errors="replace")
    raw_lines = text.split("\n")
    reader = csv.reader(io.StringIO(text), delimiter=layout.delimiter)
    name_at, uuid_at = layout.indices["sensor_name"], layout.indices["sensor_uuid"]
    start = 0
    for fields in reader:
        end = reader.line_num
        raw = "\n".join(raw_lines[start:end]).rstrip("\r")
        line_number = first_line + start
        start = end
        if not fields or all(not field.strip() for field in fields):
            continue
        if len(fields) != len(layout.column_names):
            reason = f"expected {len(layout.column_names)} fields, got {len(fields)}"
            rejected.append((line_number, reason, raw))
            continue
        name, uuid_text = fields[name_at].strip(), fields[uuid_at].strip()
        if not name:
            rejected.append((line_number, "empty sensor_name", raw))
            continue
        try:
            sensor_uuid = uuid.UUID(uuid_text)
        except ValueError:
            rejected.append((line_number, f"malformed sensor_uuid {uuid_text!r}", raw))
            continue
        accepted.append((line_number, name, sensor_uuid, raw))
    return accepted, rejected


@dataclass
class MappingMerge:
    info: ObjectInfo
    inserted: int
    unchanged: int
    conflicts: int
    rejected: list[tuple[int, str, str]]


async def load_mapping(context: JobContext, resources: Resources) -> None:
    settings = resources.settings
    key = settings.mapping_key
    try:
        merge = await with_storage_retries(
            settings, key, lambda: _merge_mapping(context, resources)
        )
    except StorageError as error:
        raise JobAborted(f"{key} not loaded: {storage_failure(error, settings)}") from None

    # The merge committed (its transaction ended without an exception).
    instruments.count_rows(
        IngestSource.MAPPING,
        inserted=merge.inserted,
        duplicate=merge.unchanged,
        rejected=len(merge.rejected),
    )
    instruments.count_bytes(IngestSource.MAPPING, merge.info.size)
    rejected = sorted(merge.rejected)
    counters = context.counters
    counters.rows_inserted, counters.rows_duplicate = merge.inserted, merge.unchanged
    counters.rows_rejected = len(rejected)
    counters.objects_done, counters.bytes_done = 1, merge.info.size
    context.result = {"sensors_added": merge.inserted, "conflicts": merge.conflicts}
    for line_number, reason, _ in rejected:
        context.report_error(JobError(object_key=key, line_number=line_number, reason=reason))
    if rejected:
        context.rejected_rows_key = await _upload_rejections(resources, context, key, rejected)


async def _merge_mapping(context: JobContext, resources: Resources) -> MappingMerge:
    """One attempt: read the whole file into staging and merge it, in one transaction."""
    settings = resources.settings
    key = settings.mapping_key
    info = await head_object(resources.s3, settings.s3_bucket, key)
    if info is None:
        raise JobAborted(f"s3://{settings.s3_bucket}/{key} does not exist")
    counters = context.counters
    counters.objects_total, counters.bytes_total = 1, info.size
    counters.rows_read = 0  # counted again by each attempt
    rejected: list[tuple[int, str, str]] = []

    async with resources.metadata_pool.acquire() as connection, connection.transaction():
        await repository.create_mapping_staging(connection)
        lines = LineBlocks()
        layout: CsvLayout | None = None
        try:
            async for block, first_line in object_line_blocks(
                resources.s3, settings.s3_bucket, key, lines
            ):
                if layout is None:
                    layout = detect_layout(lines.header or b"", REQUIRED_COLUMNS)
                accepted, bad = parse_mapping_block(block, first_line, layout)
                rejected += bad
                counters.rows_read += len(accepted) + len(bad)
                await repository.copy_mapping_rows(connection, accepted)
                context.check_cancelled()
            if layout is None:
                detect_layout(lines.header or b"", REQUIRED_COLUMNS)
        except FileRejected as file_rejected:
            raise JobAborted(f"{key}: {file_rejected.reason}") from None
        conflicts = await repository.mapping_conflicts(connection)
        rejected += [(row["line_number"], row["reason"], row["raw_line"]) for row in conflicts]
        inserted, unchanged = await repository.merge_mapping(
            connection, [row["line_number"] for row in conflicts]
        )
    return MappingMerge(info, inserted, unchanged, len(conflicts), rejected)


async def _upload_rejections(
    resources: Resources, context: JobContext, key: str, rejected: list[tuple[int, str, str]]
) -> str:
    target = f"{REJECTED_PREFIX}{context.job_id}.csv"
    with tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+b") as spool:
        text = io.TextIOWrapper(spool, encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow(["object_key", "line_number", "reason", "raw_line"])
        writer.writerows((key, line, reason, raw) for line, reason, raw in rejected)
        text.flush()
        spool.seek(0)
        await resources.s3.upload_fileobj(spool, resources.settings.s3_bucket, target)
        text.detach()
    return target
