"""The service's log output: one handler on the root logger, JSON or text, and the ids
that tie a line to its request (`request_id`) or background job (`job_id`).

The ids travel in context variables, not in arguments: the request middleware and the job
supervisor set them once, and every record logged in that request or job, by our code or
a library's, gets them from the handler's filter. asyncio copies the context into each
task, so concurrent requests and jobs never see each other's ids.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Final

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.orjson import OrjsonFormatter

from app.core.config import Settings

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("job_id", default=None)

CONTEXT_FIELDS: Final = ("request_id", "job_id")
HANDLER_NAME: Final = "sensor-service"
# uvicorn passes a copy of each message with terminal colours; the plain one is enough.
_NOT_LOGGED: Final = (*RESERVED_ATTRS, "color_message")


class ContextFilter(logging.Filter):
    """Adds the current request id and job id to each record, when there is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = request_id_var.get()
        if request_id is not None:
            record.request_id = request_id
        job_id = job_id_var.get()
        if job_id is not None:
            record.job_id = job_id
        return True


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [request_id=... job_id=...]`, for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        ids = [
            f"{name}={value}"
            for name in CONTEXT_FIELDS
            if (value := getattr(record, name, None)) is not None
        ]
        return f"{line} [{' '.join(ids)}]" if ids else line


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time (UTC, RFC 3339), level, logger, message, the ids,
    whatever the call passed in `extra`, and `exc_info` with the traceback."""
    return OrjsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
        reserved_attrs=list(_NOT_LOGGED),
    )


def configure_logging(settings: Settings) -> None:
    """Send every log record of the process to stderr in LOG_FORMAT at LOG_LEVEL.

    Idempotent: each app built in one process (tests build many) replaces the handler of
    the previous one instead of adding a second. uvicorn's own loggers are routed through
    it too, so that in JSON mode every line of the service is JSON; uvicorn's access log
    is silenced because the request middleware writes one line per request itself.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.addFilter(ContextFilter())
    handler.setFormatter(json_formatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for previous in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # Without a handler anywhere up its chain, uvicorn (which asks `hasHandlers()`) does
    # not even format its access line.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
