"""Anomalies on demand (one sensor, one range) and fleet scans (every sensor, as a job)."""

from __future__ import annotations

import asyncio
import logging
import math
import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import urlencode
from uuid import UUID
from zoneinfo import ZoneInfo

from app.anomalies import repository, worker
from app.anomalies.exceptions import RangeTooLarge, ScanNotFound
from app.anomalies.model import (
    Detection,
    DetectionParams,
    Direction,
    Method,
    Model,
    Seasonality,
)
from app.anomalies.schemas import (
    AnomalyOut,
    AnomalyResult,
    ChangePointOut,
    DataSummary,
    GapOut,
    ReportEntry,
    ScanReport,
    ScanRequest,
    SegmentOut,
    UsedParameters,
    WindowOut,
)
from app.core.db import Connection
from app.core.lifespan import Resources
from app.core.pagination import decode_cursor, encode_cursor
from app.jobs.exceptions import JobNotFound
from app.jobs.schemas import Job, JobError, JobKind
from app.jobs.service import JobContext, get_job
from app.readings.exceptions import InvalidParameter
from app.readings.service import ReadingsQuery, parse_instant
from app.sensors import repository as sensors_repository

logger = logging.getLogger(__name__)

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$")
SECONDS_PER_UNIT = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
SCAN_SENSOR_PAGE = 1000


def parse_duration(parameter: str, text: str) -> float:
    match = DURATION.match(text)
    if match is None:
        raise InvalidParameter(parameter, f"{text!r} is not a duration such as 90m, 6h, 1d or 2w")
    return float(match.group(1)) * SECONDS_PER_UNIT[match.group(2)]


def parse_number_or_auto(parameter: str, text: str) -> float | None:
    if text.strip().lower() == "auto":
        return None
    try:
        number = float(text)
    except ValueError:
        raise InvalidParameter(parameter, f"{text!r} is neither a number nor auto") from None
    if not math.isfinite(number):
        raise InvalidParameter(parameter, f"{text!r} is not a finite number")
    return number


def detection_params(
    *,
    method: Method,
    model: Model,
    penalty: str,
    n_bkps: int | None,
    min_segment: str | None,
    threshold: str,
    direction: Direction,
    seasonality: Seasonality,
) -> DetectionParams:
    params = DetectionParams(
        method=method,
        model=model,
        penalty=parse_number_or_auto("penalty", penalty),
        n_bkps=n_bkps,
        min_segment_seconds=None
        if min_segment is None
        else parse_duration("min_segment", min_segment),
        threshold=parse_number_or_auto("threshold", threshold),
        direction=direction,
        seasonality=seasonality,
    )
    try:
        params.validate()
    except ValueError as error:
        parameter, _, reason = str(error).partition(": ")
        raise InvalidParameter(parameter, reason) from None
    return params


async def fetch_series(
    resources: Resources, sensor_uuid: UUID, start: datetime | None, end: datetime | None
) -> bytes:
    limit = resources.settings.analysis_max_points
    async with resources.timeseries_pool.acquire() as connection:
        data = await repository.copy_series(
            connection, sensor_uuid=sensor_uuid, start=start, end=end, limit=limit + 1
        )
    rows = (len(data) - worker.COPY_HEADER_BYTES - worker.COPY_TRAILER_BYTES) // (
        worker.ROW_DTYPE.itemsize
    )
    if rows > limit:
        raise RangeTooLarge(limit)
    return data


UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(timestamp_us: int, zone: tzinfo) -> datetime:
    return (UNIX_EPOCH + timedelta(microseconds=timestamp_us)).astimezone(zone)


def result_fields(item: object, zone: tzinfo) -> dict[str, Any]:
    """A result dataclass's fields, `*_us` ones as datetimes in `zone`."""
    return {
        name.removesuffix("_us"): _instant(value, zone) if name.endswith("_us") else value
        for name, value in vars(item).items()
    }


def query_string(query: ReadingsQuery, raw_params: dict[str, str]) -> str:
    """The query string that reproduces this analysis (for links between resources)."""
    return urlencode(
        {
            "sensor_name": query.sensor_name,
            "start": query.start.isoformat(),
            "end": query.end.isoformat(),
            "tz": query.tz,
            **raw_params,
        }
    )


def render_result(
    query: ReadingsQuery, detection: Detection, raw_params: dict[str, str]
) -> AnomalyResult:
    zone = ZoneInfo(query.tz)

    used = None
    if detection.params is not None:
        used = UsedParameters(
            **{
                name: value
                for name, value in vars(detection.params).items()
                if name in UsedParameters.model_fields
            },
            hash=detection.params.digest,
        )
    first, last = detection.first_us, detection.last_us
    return AnomalyResult(
        sensor_name=query.sensor_name,
        sensor_uuid=query.sensor_uuid,
        start=query.start.astimezone(zone),
        end=query.end.astimezone(zone),
        tz=query.tz,
        parameters=used,
        summary=DataSummary(
            points=detection.points,
            first_timestamp=None if first is None else _instant(first, zone),
            last_timestamp=None if last is None else _instant(last, zone),
            gaps=[GapOut(**result_fields(gap, zone)) for gap in detection.gaps],
            gap_count=detection.gap_total,
        ),
        segments=[SegmentOut(**result_fields(segment, zone)) for segment in detection.segments],
        change_points=[
            ChangePointOut(**result_fields(point, zone)) for point in detection.change_points
        ],
        anomalies=[AnomalyOut(**result_fields(anomaly, zone)) for anomaly in detection.anomalies],
        anomaly_count=detection.anomaly_total,
        windows=[WindowOut(**result_fields(window, zone)) for window in detection.windows],
        window_count=detection.window_total,
        truncated=detection.anomaly_total > len(detection.anomalies)
        or detection.window_total > len(detection.windows),
        explanation=detection.explanation,
        plot_url=f"/anomalies/plot?{query_string(query, raw_params)}",
    )


async def analyse(
    resources: Resources, query: ReadingsQuery, params: DetectionParams, raw_params: dict[str, str]
) -> AnomalyResult:
    data = await fetch_series(resources, query.sensor_uuid, query.start, query.end)
    detection = await resources.analysis.run(worker.analyse, data, params)
    return render_result(query, detection, raw_params)


async def plot(resources: Resources, query: ReadingsQuery, params: DetectionParams) -> bytes:
    data = await fetch_series(resources, query.sensor_uuid, query.start, query.end)
    zone = ZoneInfo(query.tz)
    title = (
        f"{query.sensor_name}  {query.start.astimezone(zone):%Y-%m-%d %H:%M} to "
        f"{query.end.astimezone(zone):%Y-%m-%d %H:%M} {query.tz}  "
        f"({params.method}, {params.model}, penalty "
        f"{'auto' if params.penalty is None else params.penalty:}, threshold "
        f"{'auto' if params.threshold is None else params.threshold})"
    )
    return await resources.analysis.run(worker.plot, data, params, title, query.tz)


# --- fleet scans ---------------------------------------------------------------------------


def scan_params(request: ScanRequest) -> DetectionParams:
    return detection_params(
        method=request.method,
        model=request.model,
        penalty=request.penalty,
        n_bkps=request.n_bkps,
        min_segment=request.min_segment,
        threshold=request.threshold,
        direction=request.direction,
        seasonality=request.seasonality,
    )


async def start_scan(resources: Resources, request: ScanRequest) -> UUID:
    params = scan_params(request)  # a bad parameter is a 422 now, not a failed job later
    zone = resources.settings.source_zone
    start = None if request.start is None else parse_instant("start", request.start, zone)
    end = None if request.end is None else parse_instant("end", request.end, zone)
    if start is not None and end is not None and end <= start:
        raise InvalidParameter("end", f"must be after start ({start.isoformat()})")

    async def work(context: JobContext) -> None:
        await FleetScan(context, resources, params, start, end, request.sensor_prefix).run()

    return await resources.jobs.start(
        JobKind.ANOMALY_SCAN, request.model_dump(mode="json", exclude_none=True), work
    )


class FleetScan:
    """Every sensor analysed in turn, each result saved as it is ready. Fetching the next
    sensor's readings overlaps the analysis of the current ones; the analysis itself uses
    the pool's scan slots only, leaving a process to the API."""

    def __init__(
        self,
        context: JobContext,
        resources: Resources,
        params: DetectionParams,
        start: datetime | None,
        end: datetime | None,
        prefix: str | None,
    ) -> None:
        self._context = context
        self._resources = resources
        self._params = params
        self._start = start
        self._end = end
        self._prefix = prefix
        self._with_anomalies = 0
        self._windows = 0

    async def run(self) -> None:
        sensors = await self._sensors()
        self._context.counters.objects_total = len(sensors)
        queue: asyncio.Queue[tuple[str, UUID]] = asyncio.Queue()
        for sensor in sensors:
            queue.put_nowait(sensor)
        # One more worker than scan slots: one fetch is always ahead of the analyses.
        workers = self._resources.analysis.workers
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(max(1, workers - 1) + 1):
                    group.create_task(self._drain(queue))
        except* Exception as errors:
            # The first reason the scan stopped (a cancel, a shutdown, a lost lock) is the
            # job's, not a group of it: the other workers only stopped because of it.
            raise errors.exceptions[0] from None
        self._context.result = self._summary()

    async def _sensors(self) -> list[tuple[str, UUID]]:
        sensors: list[tuple[str, UUID]] = []
        after = None
        while True:
            async with self._resources.metadata_pool.acquire() as connection:
                page = await sensors_repository.list_by_name(
                    connection, prefix=self._prefix, after=after, limit=SCAN_SENSOR_PAGE
                )
            sensors += [(r["sensor_name"], r["sensor_uuid"]) for r in page]
            if len(page) < SCAN_SENSOR_PAGE:
                return sensors
            after = page[-1]["sensor_name"]

    async def _drain(self, queue: asyncio.Queue[tuple[str, UUID]]) -> None:
        while not queue.empty():
            self._context.check_cancelled()
            name, sensor_uuid = queue.get_nowait()
            try:
                data = await fetch_series(self._resources, sensor_uuid, self._start, self._end)
            except RangeTooLarge as error:
                self._context.report_error(
                    JobError(object_key=name, line_number=None, reason=error.message)
                )
                self._context.counters.objects_done += 1
                continue
            try:
                detection = await self._resources.analysis.run_for_scan(
                    worker.analyse, data, self._params
                )
            except Exception as error:  # one sensor's failure must not end the scan
                logger.exception("analysis of sensor %s failed", name)
                reason = f"analysis failed: {type(error).__name__}: {error}"
                self._context.report_error(
                    JobError(object_key=name, line_number=None, reason=reason)
                )
                self._context.counters.objects_done += 1
                continue
            await self._save(name, sensor_uuid, detection)
            counters = self._context.counters
            counters.objects_done += 1
            counters.bytes_done += len(data)
            counters.rows_read += detection.points

    async def _save(self, name: str, sensor_uuid: UUID, detection: Detection) -> None:
        kinds: dict[str, int] = {}
        for window in detection.windows:
            kinds[window.kind] = kinds.get(window.kind, 0) + 1
        if detection.window_total:
            self._with_anomalies += 1
            self._windows += detection.window_total
        summary: dict[str, Any] = {
            "window_kinds": kinds,
            "windows": [result_fields(window, UTC) for window in detection.windows],
            "change_points": [result_fields(point, UTC) for point in detection.change_points],
            "explanation": detection.explanation,
            "parameters_hash": detection.params.digest if detection.params else None,
            # The range a report link analyses when the scan had none: this sensor's data.
            "first": None if detection.first_us is None else _instant(detection.first_us, UTC),
            "last": None if detection.last_us is None else _instant(detection.last_us, UTC),
        }
        async with self._resources.metadata_pool.acquire() as connection:
            await repository.save_result(
                connection,
                job_id=self._context.job_id,
                sensor_uuid=sensor_uuid,
                sensor_name=name,
                points=detection.points,
                anomaly_count=detection.anomaly_total,
                window_count=detection.window_total,
                change_point_count=len(detection.change_points),
                max_score=detection.max_score,
                result=summary,
            )

    def _summary(self) -> dict[str, Any]:
        return {
            "sensors_with_anomalies": self._with_anomalies,
            "windows": self._windows,
        }


async def get_scan_job(connection: Connection, job_id: UUID) -> Job:
    job = await get_job(connection, job_id)
    if job.kind is not JobKind.ANOMALY_SCAN:
        raise JobNotFound(job_id)
    return job


async def cancel_scan(resources: Resources, connection: Connection, job_id: UUID) -> Job:
    await get_scan_job(connection, job_id)
    await resources.jobs.cancel(job_id)
    return await get_scan_job(connection, job_id)


async def report(
    connection: Connection, job_id: UUID | None, *, cursor: str | None, limit: int
) -> ScanReport:
    if job_id is None:
        job_id = await repository.latest_scan_id(connection)
        if job_id is None:
            raise ScanNotFound("no fleet scan has run yet; start one with POST /anomalies/scan")
    job = await get_scan_job(connection, job_id)
    offset = int(decode_cursor(cursor, {"offset"})["offset"]) if cursor else 0
    totals = await repository.scan_totals(connection, job_id)
    records = await repository.ranked_results(connection, job_id, offset=offset, limit=limit + 1)
    has_more = len(records) > limit
    records = records[:limit]
    params = {k: str(v) for k, v in job.params.items() if k not in {"sensor_prefix"}}
    start, end = job.params.get("start"), job.params.get("end")
    items = []
    for rank, record in enumerate(records, start=offset + 1):
        link = {"sensor_name": record["sensor_name"], **params}
        # Without a scan range, the links cover the sensor's data as it was scanned.
        if start is None and record["first"]:
            link["start"] = record["first"]
        if end is None and record["last"]:
            link["end"] = (
                datetime.fromisoformat(record["last"]) + timedelta(seconds=1)
            ).isoformat()
        encoded = urlencode(link)
        items.append(
            ReportEntry(
                rank=rank,
                sensor_name=record["sensor_name"],
                sensor_uuid=record["sensor_uuid"],
                points=record["points"],
                anomaly_count=record["anomaly_count"],
                window_count=record["window_count"],
                change_point_count=record["change_point_count"],
                max_score=record["max_score"],
                window_kinds=record["window_kinds"] or {},
                windows=record["windows"] or [],
                change_points=record["change_points"] or [],
                result_url=f"/anomalies?{encoded}",
                plot_url=f"/anomalies/plot?{encoded}",
            )
        )
    return ScanReport(
        job_id=job_id,
        job_status=job.status.value,
        sensors_analysed=totals["analysed"],
        sensors_total=job.objects_total,
        sensors_with_anomalies=totals["with_anomalies"],
        parameters=dict(job.params),
        items=items,
        next_cursor=encode_cursor({"offset": offset + limit}) if has_more else None,
        has_more=has_more,
    )
