from __future__ import annotations

from uuid import UUID

from app.core.errors import Conflict, InvalidInput, NotFound


class SensorNotFound(NotFound):
    def __init__(self, sensor_name: str) -> None:
        super().__init__(f"no sensor named {sensor_name!r}")


class SensorExists(Conflict):
    def __init__(self, detail: str, sensor_uuid: UUID | None = None) -> None:
        context = {"sensor_uuid": str(sensor_uuid)} if sensor_uuid else None
        super().__init__(detail, context=context)


class InvalidSensorChange(InvalidInput):
    pass


class DeleteBlockedByIngestion(Conflict):
    def __init__(self, sensor_name: str, job_id: UUID) -> None:
        super().__init__(
            f"sensor {sensor_name!r} cannot be deleted while a timeseries ingestion runs "
            "(it could write the readings again); retry when the job has finished",
            context={"running_job_id": str(job_id)},
        )
