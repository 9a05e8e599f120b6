"""API keys through the HTTP API: every route but health and the docs needs one, and the
scope follows the method."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.core.security import find_key, needed_scope
from app.main import create_app
from app.storage.s3 import S3Client
from tests.conftest import running_app
from tests.helpers import READ_KEY, WRITE_KEY

OPEN_PATHS = {"/healthz", "/readyz"}


def _protected_operations() -> list[tuple[str, str]]:
    """(method, path with sample parameters) of every operation that must ask for a key."""
    schema = create_app(Settings(_env_file=None)).openapi()
    operations: list[tuple[str, str]] = []
    for path, item in schema["paths"].items():
        if path in OPEN_PATHS:
            continue
        sample = path.replace("{job_id}", str(uuid.uuid4()))
        sample = re.sub(r"\{[^}]+\}", "sample", sample)
        operations.extend((method.upper(), sample) for method in sorted(item))
    return operations


PROTECTED = _protected_operations()
READS = [(method, path) for method, path in PROTECTED if method == "GET"]
WRITES = [(method, path) for method, path in PROTECTED if method != "GET"]


def test_every_kind_of_route_is_covered() -> None:
    assert ("GET", "/readings") in READS
    assert ("GET", "/anomalies/report") in READS
    assert ("POST", "/readings") in WRITES
    assert ("POST", "/ingest/timeseries") in WRITES
    assert ("POST", "/anomalies/scan") in WRITES
    assert ("DELETE", "/sensors/sample") in WRITES
    assert ("PATCH", "/sensors/sample") in WRITES


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_no_key_gets_401_before_anything_else(
    settings: Settings, s3: S3Client, method: str, path: str
) -> None:
    async with running_app(settings, api_key=None) as client:
        response = await client.request(method, path)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    assert "X-API-Key" in response.json()["detail"]
    assert response.headers["WWW-Authenticate"] == 'ApiKey header="X-API-Key"'


async def test_an_unknown_key_gets_401(settings: Settings, s3: S3Client) -> None:
    async with running_app(settings, api_key="not-a-configured-key") as client:
        response = await client.get("/sensors")
    assert response.status_code == 401
    assert response.json()["detail"] == "unknown API key in X-API-Key"


@pytest.mark.parametrize(("method", "path"), WRITES)
async def test_a_read_key_gets_403_on_every_write(
    settings: Settings, s3: S3Client, method: str, path: str
) -> None:
    async with running_app(settings, api_key=READ_KEY) as client:
        response = await client.request(method, path)
    assert response.status_code == 403, response.text
    assert response.json()["detail"] == (
        f"the key 'reader' has no write scope; {method} needs a key with the write scope"
    )


@pytest.mark.parametrize(("method", "path"), READS)
async def test_a_write_key_gets_403_on_every_read(
    settings: Settings, s3: S3Client, method: str, path: str
) -> None:
    async with running_app(settings, api_key=WRITE_KEY) as client:
        response = await client.request(method, path)
    assert response.status_code == 403, response.text


async def test_scoped_keys_do_what_their_scope_allows_and_label_changes(
    settings: Settings, s3: S3Client
) -> None:
    name = f"auth-{uuid.uuid4().hex[:8]}"
    async with running_app(settings, api_key=WRITE_KEY) as writer:
        created = await writer.post("/sensors", json={"name": name, "unit": "degC"})
    assert created.status_code == 201, created.text
    assert created.json()["updated_by"] == "writer"
    async with running_app(settings, api_key=READ_KEY) as reader:
        read = await reader.get(f"/sensors/{name}")
    assert read.status_code == 200
    assert read.json()["unit"] == "degC"
    async with running_app(settings) as both:  # the bare key labelled "tester"
        changed = await both.patch(f"/sensors/{name}", json={"unit": "K"})
        assert changed.json()["updated_by"] == "tester"
        assert (await both.delete(f"/sensors/{name}")).status_code == 200


async def test_health_and_docs_need_no_key(settings: Settings, s3: S3Client) -> None:
    async with running_app(settings, api_key=None) as client:
        for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text)


async def test_without_api_keys_reads_are_open_and_writes_refused_saying_why(
    settings: Settings, s3: S3Client
) -> None:
    keyless = settings.model_copy(update={"api_keys": ()})
    async with running_app(keyless, api_key=None) as client:
        assert (await client.get("/sensors")).status_code == 200
        response = await client.post("/sensors", json={"name": "nobody-may-write"})
        # A key is ignored: there is none it could match.
        with_key = await client.post("/readings", json=[], headers={"X-API-Key": "anything"})
    assert response.status_code == 403
    assert "writes are disabled because API_KEYS is empty" in response.json()["detail"]
    assert with_key.status_code == 403


async def test_the_openapi_declares_the_key_scheme_on_every_protected_operation(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    scheme = schema["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-API-Key")
    operations: dict[str, Any] = {
        f"{method.upper()} {path}": operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }
    for name, operation in operations.items():
        if name in {"GET /healthz", "GET /readyz"}:
            assert "security" not in operation, name
        else:
            assert operation.get("security") == [{"ApiKey": []}], name


def test_keys_are_matched_by_value_and_the_scope_follows_the_method(settings: Settings) -> None:
    assert find_key(settings.api_keys, READ_KEY) is not None
    assert find_key(settings.api_keys, READ_KEY[:-1]) is None
    assert find_key(settings.api_keys, "") is None
    assert needed_scope("GET") == needed_scope("HEAD") == "read"
    assert {needed_scope(m) for m in ("POST", "PATCH", "PUT", "DELETE")} == {"write"}
