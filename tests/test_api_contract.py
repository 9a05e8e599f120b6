"""Schemathesis against the running service: every operation of /openapi.json, with and
without a valid key, must answer without a 5xx and as its schema says (status codes,
content types, bodies, headers)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from app.core.config import REPOSITORY_ROOT
from app.devstack.ports import free_port_block
from tests.conftest import IngestEnvironment
from tests.helpers import TEST_KEY, ServerProcess
from tests.readings.conftest import loaded  # noqa: F401 - a fixture, used by name

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


async def _schemathesis(base_url: str, *options: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{base_url}/openapi.json",
        f"--checks={CHECKS}",
        "--max-examples=25",
        "--workers=2",
        "--request-timeout=60",
        "--suppress-health-check=all",
        "--generation-allow-x00=true",
        "--generation-deterministic",  # the same cases on every CI run
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
            "PYTHONPATH": str(REPOSITORY_ROOT),
        },
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.mark.parametrize("with_key", [True, False], ids=["with-key", "without-key"])
async def test_schemathesis_finds_no_5xx_and_no_schema_violation(
    loaded: IngestEnvironment,  # noqa: F811
    tmp_path: Path,
    with_key: bool,
) -> None:
    server = ServerProcess(loaded.settings, free_port_block((0,)), tmp_path / "server.log")
    await server.start()
    try:
        async with server.client() as client:
            schema = (await client.get("/openapi.json")).json()
        operations = [(path, method) for path, item in schema["paths"].items() for method in item]
        options = [f"--header=X-API-Key: {TEST_KEY}"] if with_key else []
        returncode, output = await _schemathesis(server.base_url, *options)
    finally:
        server.stop()
    assert returncode == 0, output[-20_000:]
    tested = re.search(r"Tested: (\d+)", output)
    assert tested is not None, output[-5_000:]
    assert int(tested.group(1)) == len(operations), output[-5_000:]
