from __future__ import annotations

from fastapi import APIRouter, Response

from app.core.deps import ResourcesDep
from app.health import service
from app.health.schemas import Liveness, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Liveness)
async def liveness() -> Liveness:
    """The process is up and serving requests."""
    return Liveness()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is unreachable"}},
)
async def readiness(resources: ResourcesDep, response: Response) -> Readiness:
    """Both databases and the bucket are reachable; 503 naming what failed otherwise."""
    report = await service.check_readiness(resources)
    if report.failed:
        response.status_code = 503
    return report
