from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from app.core.deps import ResourcesDep
from app.metrics import service

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4

# A plain router like the others, so that a router-level dependency (API keys) applies
# to it the same way.
router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format 0.0.4.",
            "content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(resources: ResourcesDep) -> Response:
    """Prometheus metrics: request latency, ingested rows and bytes, jobs, pool usage."""
    return Response(await service.render(resources), media_type=CONTENT_TYPE)
