from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class DependencyCheck(BaseModel):
    ok: bool
    latency_ms: float = Field(description="How long the check took.")
    detail: str = Field(description="What was found, or why the check failed.")


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    failed: list[str] = Field(description="Names of the checks that failed.")
    checks: dict[str, DependencyCheck]
