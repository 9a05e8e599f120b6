from __future__ import annotations

from app.core.errors import NotFound


class SensorNotFound(NotFound):
    def __init__(self, sensor_name: str) -> None:
        super().__init__(f"no sensor named {sensor_name!r}")
