"""One pass around every HTTP request: its id, its access log line, its latency.

A plain ASGI middleware, not Starlette's BaseHTTPMiddleware: that one runs the rest of
the app in a task group of its own and passes every response chunk through a memory
stream, per request, for what a `send` wrapper does here. GET /readings streams large
bodies at a p50 of ~11 ms; this one adds a few microseconds (bench/request_middleware.py,
README "Operations: logs and metrics").
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.logs import request_id_var

REQUEST_ID_HEADER: Final = b"x-request-id"
# A caller's id is kept if it is 1-128 visible ASCII characters (no spaces, no control
# characters): anything else could break a log line or a header, and is replaced.
_SANE_REQUEST_ID: Final = re.compile(rb"[\x21-\x7e]{1,128}")
# The route label of requests that matched no route: a constant, so that probing random
# paths cannot create metric series.
UNMATCHED: Final = "unmatched"

access_logger = logging.getLogger("app.access")

RequestObserver = Callable[[str, str, int, float], None]  # method, route, status, seconds


def request_id_from(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID if it is sane, else a new one: 32 random hex digits
    (os.urandom, like uuid4, but without uuid4's 1.5 us of formatting)."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _SANE_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return secrets.token_hex(16)


def templates_by_endpoint(routes: Iterable[BaseRoute]) -> dict[int, str]:
    """Route templates of plain Starlette routes and mounts (the OpenAPI document, the
    docs' static files), keyed by the id of the endpoint they put in the scope.

    FastAPI puts its own routes in `scope["route"]`; Starlette's leave only the endpoint.
    """
    templates = {}
    for route in routes:
        if isinstance(route, Route):
            templates[id(route.endpoint)] = route.path_format
        elif isinstance(route, Mount):
            templates[id(route.app)] = route.path_format
    return templates


def route_template(scope: Scope, endpoint_templates: Mapping[int, str]) -> str:
    route = scope.get("route")
    if route is not None:
        template: str | None = getattr(route, "path_format", None)
        return template or UNMATCHED
    endpoint = scope.get("endpoint")
    if endpoint is not None:
        return endpoint_templates.get(id(endpoint), UNMATCHED)
    return UNMATCHED


class RequestObservation:
    """Gives each HTTP request an id (the caller's X-Request-ID when sane, else a new one)
    that every log record of the request carries and the response echoes, then writes one
    access log line and observes the latency.

    It must be the outermost layer, outside Starlette's ServerErrorMiddleware: then the
    500 that one sends carries the X-Request-ID too, and the traceback it logs carries the
    request id.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        observe: RequestObserver,
        endpoint_templates: Mapping[int, str],
    ) -> None:
        self.app = app
        self.observe = observe
        self.endpoint_templates = endpoint_templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope["headers"])
        echoed = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        # 500 stands if the app fails before it starts a response.
        status = 500
        sent_bytes = 0

        async def send_observed(message: Message) -> None:
            nonlocal status, sent_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), echoed]}
            elif message["type"] == "http.response.body":
                sent_bytes += len(message.get("body", b""))
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_observed)
        finally:
            try:
                self._finished(scope, status, time.perf_counter() - started, sent_bytes)
            finally:
                request_id_var.reset(token)

    def _finished(self, scope: Scope, status: int, seconds: float, sent_bytes: int) -> None:
        route = route_template(scope, self.endpoint_templates)
        method: str = scope["method"]
        self.observe(method, route, status, seconds)
        if access_logger.isEnabledFor(logging.INFO):
            access_logger.info(
                "%s %s %d %.1f ms",
                method,
                scope["path"],
                status,
                seconds * 1000,
                extra={
                    "method": method,
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "response_bytes": sent_bytes,
                },
            )


def observe_requests(app: Starlette, observe: RequestObserver) -> None:
    """Put RequestObservation outside the app's whole middleware stack.

    `add_middleware` would place it inside ServerErrorMiddleware, so the stack builder is
    wrapped instead. Starlette builds the stack at the first request, when every route,
    middleware and exception handler added after create_app() is known too.
    """
    build_stack = app.build_middleware_stack

    def build_observed_stack() -> ASGIApp:
        return RequestObservation(
            build_stack(), observe=observe, endpoint_templates=templates_by_endpoint(app.routes)
        )

    app.build_middleware_stack = build_observed_stack  # type: ignore[method-assign]
