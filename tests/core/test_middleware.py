"""The request middleware through the HTTP API: X-Request-ID in and out, one access line
per request with the route template, and a 500 that still carries the request id."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.main import create_app
from tests.conftest import running_app
from tests.helpers import service_log

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def access_lines(text: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(text) if line["logger"] == "app.access"]


async def test_a_sane_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "checkout-7f3a:retry/2"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "checkout-7f3a:retry/2"


async def test_without_a_request_id_each_request_gets_a_new_one(
    client: httpx.AsyncClient,
) -> None:
    first = (await client.get("/healthz")).headers["x-request-id"]
    second = (await client.get("/healthz")).headers["x-request-id"]
    assert GENERATED_ID.fullmatch(first)
    assert GENERATED_ID.fullmatch(second)
    assert first != second


@pytest.mark.parametrize(
    "unusable",
    [b"two words", b"x" * 129, b"", b"caf\xe9", b"line\tbreak"],
    ids=["space", "too-long", "empty", "not-ascii", "control-character"],
)
async def test_an_unusable_request_id_is_replaced(
    client: httpx.AsyncClient, unusable: bytes
) -> None:
    response = await client.get("/healthz", headers={b"X-Request-ID": unusable})
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])


async def test_one_access_line_per_request_labelled_by_route_template(
    settings: Settings,
) -> None:
    async with running_app(settings) as client:
        with service_log() as log:
            await client.get("/sensors/sensor_not_there", headers={"X-Request-ID": "r-1"})
            await client.get("/no/such/path", headers={"X-Request-ID": "r-2"})
            await client.get("/openapi.json", headers={"X-Request-ID": "r-3"})
            await client.get("/static-offline-docs/favicon.png", headers={"X-Request-ID": "r-4"})
            await client.post("/healthz", headers={"X-Request-ID": "r-5"})
    seen = {line["request_id"]: line for line in access_lines(log.getvalue())}
    assert {rid: (line["route"], line["status"]) for rid, line in seen.items()} == {
        "r-1": ("/sensors/{sensor_name}", 404),
        "r-2": ("unmatched", 404),
        "r-3": ("/openapi.json", 200),
        "r-4": ("/static-offline-docs/{path}", 200),
        "r-5": ("/healthz", 405),
    }
    assert seen["r-1"]["path"] == "/sensors/sensor_not_there"


async def test_an_unhandled_error_is_a_500_with_the_request_id_in_header_and_log(
    settings: Settings,
) -> None:
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("the handler broke")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with service_log() as log:
            response = await client.get("/boom", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert response.headers["x-request-id"] == "boom-1"
    lines = json_lines(log.getvalue())
    (traceback_line,) = [line for line in lines if line["logger"] == "app.core.errors"]
    assert traceback_line["request_id"] == "boom-1"
    assert "RuntimeError: the handler broke" in traceback_line["exc_info"]
    (access,) = access_lines(log.getvalue())
    assert (access["request_id"], access["route"], access["status"]) == ("boom-1", "/boom", 500)
