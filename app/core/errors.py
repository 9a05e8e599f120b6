"""The service's one error hierarchy, mapped to HTTP in exactly one place."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import asyncpg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class AppError(Exception):
    status_code = 500
    error = "internal_error"
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, message: str, *, context: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Machine-readable facts about the error, e.g. the id of the job that blocks a new one.
        self.context = context


class Unauthorized(AppError):
    status_code = 401
    error = "unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'}


class Forbidden(AppError):
    status_code = 403
    error = "forbidden"


class NotFound(AppError):
    status_code = 404
    error = "not_found"


class Conflict(AppError):
    status_code = 409
    error = "conflict"


class InvalidInput(AppError):
    status_code = 422
    error = "invalid_input"


class PayloadTooLarge(AppError):
    status_code = 413
    error = "payload_too_large"


class UnsupportedMediaType(AppError):
    status_code = 415
    error = "unsupported_media_type"


class ServiceUnavailable(AppError):
    status_code = 503
    error = "service_unavailable"


class ErrorBody(BaseModel):
    """Every error response has this shape."""

    error: str
    detail: Any
    context: dict[str, Any] | None = None


def error_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route, so the OpenAPI lists the errors it really returns."""
    return {
        error.status_code: {"model": ErrorBody, "description": error.__name__} for error in errors
    }


def _body(
    error: str, detail: Any, status_code: int, context: dict[str, Any] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "detail": detail}
    if context:
        body["context"] = context
    return JSONResponse(status_code=status_code, content=jsonable_encoder(body))


def _describe_validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    described = []
    for problem in exc.errors():
        location = ".".join(str(part) for part in problem.get("loc", ()))
        described.append({"loc": location, "msg": problem.get("msg"), "type": problem.get("type")})
    return described


def register_error_handlers(app: FastAPI) -> None:
    async def app_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        response = _body(exc.error, exc.message, exc.status_code, exc.context)
        response.headers.update(exc.headers)
        return response

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _body(InvalidInput.error, _describe_validation_errors(exc), 422)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot decode: as invalid as any other input.
            return _body(
                InvalidInput.error, f"the request body: {exc.detail} (send UTF-8 JSON)", 422
            )
        error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = _body(error, exc.detail, exc.status_code)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def statement_timeout(request: Request, exc: Exception) -> JSONResponse:
        # A limit of the request's size, like the others: the client can ask for less.
        limit = request.state.resources.settings.db_statement_timeout_seconds
        return _body(
            "query_timeout",
            f"the query ran longer than DB_STATEMENT_TIMEOUT_SECONDS = {limit:g} s; narrow "
            "the time range, choose a coarser interval, or stream it (format=csv|ndjson)",
            422,
        )

    async def unstorable_text(_: Request, exc: Exception) -> JSONResponse:
        # PostgreSQL text cannot hold NUL, whichever request text (query, path, body) it
        # came from: one rule here instead of a check on every string of every route.
        return _body(
            InvalidInput.error,
            "a text parameter holds a NUL (\\x00) character, which no sensor name, "
            "cursor or other text stored here can contain",
            422,
        )

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _body(AppError.error, "internal server error; see the service log", 500)

    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(asyncpg.QueryCanceledError, statement_timeout)
    app.add_exception_handler(asyncpg.CharacterNotInRepertoireError, unstorable_text)
    app.add_exception_handler(Exception, unexpected_error)
