"""The sensor and time range every endpoint over a sensor's readings takes, with one set of
rules: by name (404 naming it), start inclusive and end exclusive, naive times in
SOURCE_TIMEZONE, 422 naming the parameter."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Query

from app.core.deps import ResourcesDep
from app.readings import service
from app.readings.schemas import Order
from app.readings.service import ReadingsQuery


async def sensor_range(
    resources: ResourcesDep,
    sensor_name: Annotated[str, Query(max_length=200, description="The sensor's name.")],
    start: Annotated[
        str,
        Query(
            description="Inclusive. ISO 8601 with an offset or Z; a naive time is read in "
            "SOURCE_TIMEZONE (Europe/Berlin by default)."
        ),
    ],
    end: Annotated[str, Query(description="Exclusive. Same forms as start.")],
    tz: Annotated[str, Query(description="IANA zone the timestamps are rendered in.")] = "UTC",
) -> ReadingsQuery:
    # Cached in the process (see SensorDirectory); a miss borrows a metadata connection
    # for the lookup only, so a slow client or a long stream never holds one.
    sensor_uuid = await resources.sensors.uuid_of(sensor_name)
    return service.build_query(
        resources.settings,
        sensor_name=sensor_name,
        sensor_uuid=sensor_uuid,
        start=start,
        end=end,
        order=Order.ASC,
        tz=tz,
    )


SensorRangeDep = Annotated[ReadingsQuery, Depends(sensor_range)]


async def readings_query(
    query: SensorRangeDep,
    order: Annotated[Order, Query(description="Time order.")] = Order.ASC,
) -> ReadingsQuery:
    return replace(query, order=order)


QueryDep = Annotated[ReadingsQuery, Depends(readings_query)]
