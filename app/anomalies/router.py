from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Depends, Query, Response, status

from app.anomalies import service
from app.anomalies.exceptions import AnalysisBusy, RangeTooLarge, ScanNotFound
from app.anomalies.model import DetectionParams, Direction, Method, Model, Seasonality
from app.anomalies.schemas import AnomalyResult, ScanReport, ScanRequest
from app.core.deps import MetaConn, ResourcesDep
from app.core.errors import InvalidInput, error_responses
from app.jobs.exceptions import JobAlreadyFinished, JobAlreadyRunning, JobNotFound
from app.jobs.schemas import Job
from app.readings.dependencies import SensorRangeDep
from app.sensors.exceptions import SensorNotFound

router = APIRouter(prefix="/anomalies", tags=["anomalies"])

ANALYSIS_ERRORS = error_responses(SensorNotFound, InvalidInput, AnalysisBusy)


class DetectionQuery:
    """The detection parameters as query parameters, validated into DetectionParams."""

    def __init__(
        self,
        method: Annotated[
            Method, Query(description="Change-point search (ruptures); binseg is the fastest.")
        ] = Method.BINSEG,
        model: Annotated[
            Model, Query(description="Per segment: a straight line, or a constant level.")
        ] = Model.LINEAR,
        penalty: Annotated[
            str,
            Query(
                description="Cost of an extra segment: a number, or auto (BIC: (parameters "
                "per segment + 1) x sigma^2 x ln(n)); the value used is reported."
            ),
        ] = "auto",
        n_bkps: Annotated[
            int | None,
            Query(
                ge=0, le=100, description="Exactly this many change points, instead of a penalty."
            ),
        ] = None,
        min_segment: Annotated[
            str | None,
            Query(
                description="Shortest segment: 90m, 6h, 1d, 2w. Default: a twentieth of the "
                "range, between 1 hour and 1 day."
            ),
        ] = None,
        threshold: Annotated[
            str,
            Query(
                description="Robust z-score beyond which a reading is anomalous, or auto: the "
                "Gaussian quantile at which a clean series of this length expects 0.002 false "
                "flags (one per 500 clean sensors): 5.0 for 3,000 readings, 5.6 for 100k."
            ),
        ] = "auto",
        direction: Annotated[Direction, Query(description="Which deviations to report.")] = (
            Direction.BOTH
        ),
        seasonality: Annotated[
            Seasonality, Query(description="Fit a daily cycle (segments of a day or more).")
        ] = Seasonality.DAILY,
    ) -> None:
        self.raw = {
            "method": method.value,
            "model": model.value,
            "penalty": penalty,
            "threshold": threshold,
            "direction": direction.value,
            "seasonality": seasonality.value,
            **({"n_bkps": str(n_bkps)} if n_bkps is not None else {}),
            **({"min_segment": min_segment} if min_segment is not None else {}),
        }
        self.params: DetectionParams = service.detection_params(
            method=method,
            model=model,
            penalty=penalty,
            n_bkps=n_bkps,
            min_segment=min_segment,
            threshold=threshold,
            direction=direction,
            seasonality=seasonality,
        )


DetectionDep = Annotated[DetectionQuery, Depends()]


@router.get(
    "",
    response_model=AnomalyResult,
    responses=error_responses(SensorNotFound, InvalidInput, RangeTooLarge, AnalysisBusy),
)
async def get_anomalies(
    query: SensorRangeDep, detection: DetectionDep, resources: ResourcesDep
) -> AnomalyResult:
    """Change points, a regression per segment and the readings that do not fit, for one
    sensor over [start, end), with the parameters used and an explanation."""
    return await service.analyse(resources, query, detection.params, detection.raw)


@router.get(
    "/plot",
    response_class=Response,
    responses={
        **ANALYSIS_ERRORS,
        200: {"content": {"image/png": {}}, "description": "The analysis drawn as a PNG."},
    },
)
async def plot_anomalies(
    query: SensorRangeDep, detection: DetectionDep, resources: ResourcesDep
) -> Response:
    """The same analysis as GET /anomalies, drawn: readings, fitted segments, the expected
    band, change points and flagged readings."""
    png = await service.plot(resources, query, detection.params)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


def _accepted(response: Response, job_id: UUID) -> None:
    response.status_code = status.HTTP_202_ACCEPTED
    response.headers["Location"] = f"/anomalies/scan/{job_id}"


@router.post(
    "/scan",
    response_model=Job,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(JobAlreadyRunning, InvalidInput),
)
async def start_scan(
    resources: ResourcesDep,
    connection: MetaConn,
    response: Response,
    request: Annotated[ScanRequest | None, Body()] = None,
) -> Job:
    """Analyse every sensor (or those with a name prefix) in the background; poll the job at
    Location, then read GET /anomalies/report."""
    job_id = await service.start_scan(resources, request or ScanRequest())
    _accepted(response, job_id)
    return await service.get_scan_job(connection, job_id)


@router.get("/scan/{job_id}", response_model=Job, responses=error_responses(JobNotFound))
async def get_scan(job_id: UUID, connection: MetaConn) -> Job:
    """A fleet scan's progress: objects are sensors, rows are readings analysed."""
    return await service.get_scan_job(connection, job_id)


@router.delete(
    "/scan/{job_id}",
    response_model=Job,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(JobNotFound, JobAlreadyFinished),
)
async def cancel_scan(job_id: UUID, resources: ResourcesDep, connection: MetaConn) -> Job:
    """Stop a fleet scan; the sensors analysed so far stay in its report."""
    return await service.cancel_scan(resources, connection, job_id)


@router.get(
    "/report",
    response_model=ScanReport,
    responses=error_responses(ScanNotFound, JobNotFound, InvalidInput),
)
async def scan_report(
    connection: MetaConn,
    job_id: Annotated[UUID | None, Query(description="A scan; default: the newest.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Sensors per page.")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> ScanReport:
    """Sensors ranked by anomaly windows, then severity (the largest score), with links to
    each one's full result and plot."""
    return await service.report(connection, job_id, cursor=cursor, limit=limit)
