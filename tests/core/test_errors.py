"""Inputs PostgreSQL cannot take are the client's error, not the service's."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/sensors", {"prefix": "a\x00b"}),
        ("/sensors/a%00b", {}),
        ("/readings", {"sensor_name": "a\x00", "start": "2020-01-01", "end": "2020-01-02"}),
        ("/anomalies", {"sensor_name": "a\x00", "start": "2020-01-01", "end": "2020-01-02"}),
    ],
)
async def test_nul_in_request_text_gets_422(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    response = await client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_input"
    assert "NUL" in response.json()["detail"]


async def test_a_body_that_is_not_utf8_json_gets_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/sensors", content=b"\xff\xfe{", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_input"
