"""`make dev` as a new user runs it: a real process that starts SeaweedFS, seeds demo data,
serves the API, and stops everything it started on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from app.core.config import REPOSITORY_ROOT
from app.devstack.ports import free_port_block
from app.devstack.postgres import with_database
from tests.conftest import ADMIN_POSTGRES_URL


def _children_named(process: psutil.Process, name: str) -> list[psutil.Process]:
    return [child for child in process.children(recursive=True) if child.name() == name]


async def _drop_databases(names: list[str]) -> None:
    admin = await asyncpg.connect(ADMIN_POSTGRES_URL)
    for name in names:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture
def throwaway_database_names() -> Iterator[list[str]]:
    suffix = uuid.uuid4().hex[:8]
    names = [f"sensor_test_dev_{suffix}_metadata", f"sensor_test_dev_{suffix}_timeseries"]
    yield names
    asyncio.run(_drop_databases(names))


def test_make_dev_serves_a_ready_api_and_stops_what_it_started(
    tmp_path: Path, throwaway_database_names: list[str]
) -> None:
    api_port = free_port_block((0,))
    s3_port = free_port_block((-3, -2, -1, 0, 2, 7, 8, 9, 10, 12))
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPOSITORY_ROOT),
        "METADATA_DATABASE_URL": with_database(ADMIN_POSTGRES_URL, throwaway_database_names[0]),
        "TIMESERIES_DATABASE_URL": with_database(ADMIN_POSTGRES_URL, throwaway_database_names[1]),
        # Nothing listens here, so make dev must start its own S3 server on this port.
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "API_KEYS": "",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app.devstack", "--port", str(api_port)],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = None
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}") as http:
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    ready = http.get("/readyz")
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            assert ready is not None, "the API never answered"
            assert ready.status_code == 200, ready.text
            docs = http.get("/docs")
            assert docs.status_code == 200
            # The printed key opens the API; without it, a clear 401.
            generated_key = (tmp_path / ".dev/api_key").read_text().strip()
            assert http.get("/sensors").status_code == 401
            sensors = http.get("/sensors", headers={"X-API-Key": generated_key})
            assert sensors.status_code == 200, sensors.text
        weeds = _children_named(psutil.Process(process.pid), "weed")
        assert len(weeds) == 1
        children = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    text = output.decode()
    assert process.returncode == 0, text
    assert f"http://127.0.0.1:{api_port}/docs" in text
    assert "starting SeaweedFS" in text
    assert "uploaded" in text
    # Text logs for people: the app's access line with the request id, not uvicorn's.
    assert " INFO app.access: GET /docs 200 " in text
    assert '"GET /docs HTTP/1.1" 200' not in text
    api_key = (tmp_path / ".dev/api_key").read_text().strip()
    assert api_key in text
    # The CLI in another terminal reaches the same stack through .dev/env.
    env_file = (tmp_path / ".dev/env").read_text()
    assert f"S3_ENDPOINT_URL=http://127.0.0.1:{s3_port}" in env_file
    assert f"API_KEYS={api_key}" in env_file
    assert f"SENSOR_API_KEY={api_key}" in env_file
    assert not weeds[0].is_running(), "SeaweedFS outlived make dev"
    # The analysis processes too, however the service ended (they watch their parent).
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"outlived make dev: {[child.cmdline() for child in alive]}"
