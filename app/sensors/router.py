from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.core.deps import MetaConn, TsConn
from app.core.errors import InvalidInput, error_responses
from app.sensors import service
from app.sensors.exceptions import SensorNotFound
from app.sensors.schemas import Sensor, SensorPage

router = APIRouter(prefix="/sensors", tags=["sensors"])


@router.get("", response_model=SensorPage, responses=error_responses(InvalidInput))
async def list_sensors(
    metadata: MetaConn,
    timeseries: TsConn,
    prefix: Annotated[
        str | None, Query(max_length=200, description="Only names starting with this.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Sensors per page.")] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> SensorPage:
    """Sensors by name, with their first and last reading and how many there are."""
    return await service.list_sensors(
        metadata, timeseries, prefix=prefix, cursor=cursor, limit=limit
    )


@router.get("/{sensor_name}", response_model=Sensor, responses=error_responses(SensorNotFound))
async def get_sensor(
    metadata: MetaConn,
    timeseries: TsConn,
    sensor_name: Annotated[str, Path(max_length=200)],
) -> Sensor:
    """One sensor by name, or 404."""
    return await service.get_sensor(metadata, timeseries, sensor_name)
