"""The pandas function and the `readings` CLI, against a real server process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from app.__main__ import EXIT_FAILED, cli
from app.devstack.ports import free_port_block
from app.readings.client import ReadingsRequestFailed, read_readings
from tests.conftest import IngestEnvironment
from tests.helpers import READ_KEY, ServerProcess
from tests.readings.conftest import A_TIMES, iso


@pytest.fixture
async def server(loaded: IngestEnvironment, tmp_path: Path) -> AsyncIterator[str]:
    process = ServerProcess(loaded.settings, free_port_block((0,)), tmp_path / "server.log")
    await process.start()
    try:
        yield process.base_url
    finally:
        process.stop()


async def test_read_readings_returns_a_dataframe_of_the_whole_range(server: str) -> None:
    frame = await asyncio.to_thread(
        read_readings,
        "sensor_a",
        iso(A_TIMES[0]),
        "2014-01-01",
        base_url=server,
        tz="Europe/Berlin",
        api_key=READ_KEY,
    )
    assert len(frame) == len(A_TIMES)
    assert list(frame.columns) == ["value"]
    assert str(pd.DatetimeIndex(frame.index).tz) == "Europe/Berlin"
    assert frame.index[0] == pd.Timestamp(A_TIMES[0])
    assert frame["value"].iloc[-1] == (len(A_TIMES) - 1) * 0.5


async def test_read_readings_explains_a_refusal(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SENSOR_API_KEY", raising=False)
    with pytest.raises(ReadingsRequestFailed, match="HTTP 401: missing API key"):
        await asyncio.to_thread(read_readings, "nope", "2013-01-01", "2014-01-01", base_url=server)
    monkeypatch.setenv("SENSOR_API_KEY", READ_KEY)  # as in make dev's .dev/env
    with pytest.raises(ReadingsRequestFailed, match="HTTP 404: no sensor named 'nope'"):
        await asyncio.to_thread(read_readings, "nope", "2013-01-01", "2014-01-01", base_url=server)


async def test_the_cli_prints_csv_pages_and_errors(server: str) -> None:
    runner = CliRunner(env={"SENSOR_API_KEY": READ_KEY})
    base = ["readings", "--sensor-name", "sensor_a", "--start", iso(A_TIMES[0]), "--url", server]
    whole = await asyncio.to_thread(runner.invoke, cli, [*base, "--end", iso(A_TIMES[5])])
    assert whole.exit_code == 0, whole.output
    assert whole.output.splitlines()[0] == "timestamp,value"
    assert len(whole.output.splitlines()) == 6
    page = await asyncio.to_thread(
        runner.invoke,
        cli,
        [*base, "--end", iso(A_TIMES[-1]), "--page-number", "2", "--page-size", "3"],
    )
    assert page.exit_code == 0, page.output
    assert '"timestamp": "' + iso(A_TIMES[3]) + '"' in page.output
    bad = await asyncio.to_thread(runner.invoke, cli, [*base, "--end", "not-a-time"])
    assert bad.exit_code == EXIT_FAILED
    assert "end: 'not-a-time' is not an ISO 8601 time" in bad.output
