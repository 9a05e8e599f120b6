from __future__ import annotations

import re

import asyncpg
import httpx
from asgi_lifespan import LifespanManager

from app.core.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_POSTGRES_URL


async def test_healthz_answers_without_touching_dependencies(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_every_dependency_when_all_reachable(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["failed"] == []
    assert set(body["checks"]) == {"metadata_db", "timeseries_db", "object_store"}
    assert all(check["ok"] for check in body["checks"].values())
    assert "postgresql-partitioned" in body["checks"]["timeseries_db"]["detail"]


async def _readiness(settings: Settings) -> httpx.Response:
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as c,
    ):
        return await c.get("/readyz")


async def test_readyz_is_503_naming_a_missing_bucket(settings: Settings) -> None:
    response = await _readiness(settings.model_copy(update={"s3_bucket": "no-such-bucket"}))
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failed"] == ["object_store"]
    assert "does not exist" in body["checks"]["object_store"]["detail"]


async def test_readyz_is_503_naming_an_unreachable_object_store(settings: Settings) -> None:
    unreachable = settings.model_copy(
        update={"s3_endpoint_url": "http://127.0.0.1:9", "readiness_timeout_seconds": 1.0}
    )
    response = await _readiness(unreachable)
    assert response.status_code == 503
    assert response.json()["failed"] == ["object_store"]


async def test_readyz_is_503_naming_a_timeseries_database_that_went_away(
    settings: Settings,
) -> None:
    admin = await asyncpg.connect(ADMIN_POSTGRES_URL)
    doomed = "sensor_test_readyz_doomed"
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{doomed}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{doomed}"')
        doomed_url = settings.timeseries_database_url.rsplit("/", 1)[0] + f"/{doomed}"
        app = create_app(
            settings.model_copy(
                update={"timeseries_database_url": doomed_url, "migrate_on_startup": True}
            )
        )
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://t"
            ) as c,
        ):
            before = await c.get("/readyz")
            # The server stays up but this database disappears under the running service.
            await admin.execute(f'DROP DATABASE "{doomed}" WITH (FORCE)')
            response = await c.get("/readyz")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{doomed}" WITH (FORCE)')
        await admin.close()
    assert before.status_code == 200, before.text
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["timeseries_db"]
    assert doomed in body["checks"]["timeseries_db"]["detail"]
    assert body["checks"]["metadata_db"]["ok"] is True


async def test_openapi_and_swagger_ui_are_served(client: httpx.AsyncClient) -> None:
    schema = await client.get("/openapi.json")
    assert schema.status_code == 200
    assert {"/healthz", "/readyz"} <= set(schema.json()["paths"])
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    # The page's assets come from the service itself, so the docs render offline.
    assert "cdn." not in docs.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert {url.rsplit("/", 1)[-1] for url in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for url in assets:
        assert url.startswith("/"), url
        served = await client.get(url)
        assert served.status_code == 200, url
        assert len(served.content) > 1_000


async def test_unknown_route_gets_the_standard_error_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "Not Found"}
