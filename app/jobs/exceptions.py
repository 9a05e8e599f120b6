from __future__ import annotations

from uuid import UUID

from app.core.errors import Conflict, NotFound


class JobNotFound(NotFound):
    def __init__(self, job_id: UUID) -> None:
        super().__init__(f"no job with id {job_id}")


class JobAlreadyRunning(Conflict):
    def __init__(self, kind: str, running_job_id: UUID | None) -> None:
        where = f" (job {running_job_id})" if running_job_id else " (in another process)"
        super().__init__(
            f"a {kind} job is already running{where}; wait for it or cancel it",
            context={"running_job_id": str(running_job_id) if running_job_id else None},
        )


class JobAlreadyFinished(Conflict):
    def __init__(self, job_id: UUID, status: str) -> None:
        super().__init__(f"job {job_id} already finished with status {status}")
