"""Per-request cost of the request middleware (X-Request-ID, access line, latency
histogram): a trivial ASGI app called directly, then wrapped, in one event loop.

    python bench/request_middleware.py

The access line goes through the service's real handler and JSON formatter into
/dev/null, so the cost of the terminal or pipe that stderr is in production is not in it
(a write(2) of ~300 bytes, a few microseconds).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.config import Settings
from app.core.logs import HANDLER_NAME, configure_logging
from app.core.middleware import RequestObservation
from app.metrics.instruments import observe_request

CALLS = 20_000
ROUNDS = 5
SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "GET",
    "path": "/readings",
    "headers": [(b"host", b"test"), (b"accept", b"*/*"), (b"user-agent", b"bench")],
}


async def trivial_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def send(message: Any) -> None:
    pass


async def per_call_us(app: Any) -> float:
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(CALLS):
            await app(dict(SCOPE), receive, send)
        rounds.append((time.perf_counter() - started) / CALLS * 1e6)
    return statistics.median(rounds)


def main() -> None:
    configure_logging(Settings(_env_file=None, log_format="json"))
    (handler,) = [h for h in logging.getLogger().handlers if h.get_name() == HANDLER_NAME]
    assert isinstance(handler, logging.StreamHandler)
    wrapped = RequestObservation(trivial_app, observe=observe_request, endpoint_templates={})
    with Path("/dev/null").open("w") as devnull:
        handler.setStream(devnull)
        bare = asyncio.run(per_call_us(trivial_app))
        logged = asyncio.run(per_call_us(wrapped))
        logging.getLogger().setLevel(logging.WARNING)
        unlogged = asyncio.run(per_call_us(wrapped))
    print(f"trivial ASGI app alone:                      {bare:6.2f} us per request")
    print(
        f"wrapped, JSON access line at INFO:           {logged:6.2f} us (+{logged - bare:.2f} us)"
    )
    print(
        f"wrapped, LOG_LEVEL=WARNING (no access line): {unlogged:6.2f} us "
        f"(+{unlogged - bare:.2f} us)"
    )


if __name__ == "__main__":
    main()
