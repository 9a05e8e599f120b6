from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Body, Path, Query, Response, status

from app.core.deps import MetaConn, ResourcesDep, TsConn
from app.core.errors import InvalidInput, error_responses
from app.core.security import PrincipalDep
from app.sensors import service
from app.sensors.exceptions import DeleteBlockedByIngestion, SensorExists, SensorNotFound
from app.sensors.schemas import Sensor, SensorCreate, SensorDeleted, SensorPage, SensorPatch

router = APIRouter(prefix="/sensors", tags=["sensors"])

SensorName = Annotated[str, Path(max_length=200)]


@router.get("", response_model=SensorPage, responses=error_responses(InvalidInput))
async def list_sensors(
    metadata: MetaConn,
    timeseries: TsConn,
    prefix: Annotated[
        str | None, Query(max_length=200, description="Only names starting with this.")
    ] = None,
    location: Annotated[str | None, Query(max_length=200, description="Only here.")] = None,
    type: Annotated[str | None, Query(max_length=100, description="Only of this type.")] = None,
    active: Annotated[bool | None, Query(description="Only active (or inactive) ones.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Sensors per page.")] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> SensorPage:
    """Sensors by name, with their metadata and their first and last reading and how many
    there are."""
    return await service.list_sensors(
        metadata,
        timeseries,
        prefix=prefix,
        location=location,
        sensor_type=type,
        active=active,
        cursor=cursor,
        limit=limit,
    )


@router.post(
    "",
    response_model=Sensor,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(SensorExists, InvalidInput),
)
async def register_sensor(
    resources: ResourcesDep,
    principal: PrincipalDep,
    response: Response,
    body: Annotated[SensorCreate, Body()],
) -> Sensor:
    """Register a sensor; its uuid is generated unless given. A taken name or uuid: 409.
    `updated_by` is the label of the API key used."""
    sensor = await service.create_sensor(resources, body, principal.label)
    response.headers["Location"] = f"/sensors/{quote(sensor.name, safe='')}"
    return sensor


@router.get("/{sensor_name}", response_model=Sensor, responses=error_responses(SensorNotFound))
async def get_sensor(metadata: MetaConn, timeseries: TsConn, sensor_name: SensorName) -> Sensor:
    """One sensor by name, or 404."""
    return await service.get_sensor(metadata, timeseries, sensor_name)


@router.patch(
    "/{sensor_name}",
    response_model=Sensor,
    responses=error_responses(SensorNotFound, SensorExists, InvalidInput),
)
async def change_sensor(
    resources: ResourcesDep,
    principal: PrincipalDep,
    sensor_name: SensorName,
    patch: Annotated[SensorPatch, Body()],
) -> Sensor:
    """Change metadata or rename; only the fields given change. A rename keeps the uuid
    and the readings. `updated_by` is the label of the API key used."""
    return await service.update_sensor(resources, sensor_name, patch, principal.label)


@router.delete(
    "/{sensor_name}",
    response_model=SensorDeleted,
    responses=error_responses(SensorNotFound, DeleteBlockedByIngestion),
)
async def delete_sensor(resources: ResourcesDep, sensor_name: SensorName) -> SensorDeleted:
    """Delete a sensor and all its readings. Interrupted, it is finished by running it
    again (or by the next startup)."""
    return await service.delete_sensor(resources, sensor_name)
