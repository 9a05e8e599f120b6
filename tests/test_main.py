"""The command line (`python -m app`), run in-process against the test databases and S3."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from app.__main__ import EXIT_FAILED, EXIT_REJECTED, cli
from tests.conftest import IngestEnvironment

SENSOR = "00000000-0000-0000-0000-000000000001"


@pytest.fixture
def cli_environment(
    ingest: IngestEnvironment, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> IngestEnvironment:
    for name, value in ingest.settings.to_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(str(tmp_path))
    return ingest


def test_migrate_reports_each_database(cli_environment: IngestEnvironment) -> None:
    result = CliRunner().invoke(cli, ["migrate"])
    assert result.exit_code == 0, result.output
    assert "metadata: up to date" in result.output
    assert "timeseries: up to date" in result.output


def test_ingest_commands_load_the_bucket_and_exit_by_outcome(
    cli_environment: IngestEnvironment,
) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["ingest", "mapping", "--quiet"])
    assert missing.exit_code == EXIT_FAILED, missing.output
    assert "does not exist" in missing.output

    asyncio.run(_put(cli_environment, "mapping.csv", f"sensor_name;sensor_uuid\ns1;{SENSOR}\n"))
    asyncio.run(
        _put(
            cli_environment,
            "Timeseries/a.csv",
            "timestamp;sensor_uuid;sensor_value\n"
            f"2013-01-01 00:00:00;{SENSOR};1.5\nbad;{SENSOR};1\n",
        )
    )
    mapping = runner.invoke(cli, ["ingest", "mapping", "--quiet"])
    assert mapping.exit_code == 0, mapping.output
    assert "succeeded: 1/1 objects" in mapping.output

    loaded = runner.invoke(cli, ["ingest", "timeseries", "--quiet"])
    assert loaded.exit_code == 0, loaded.output
    assert "completed_with_errors" in loaded.output
    assert "1 inserted" in loaded.output
    assert "Timeseries/a.csv:3: unparseable timestamp" in loaded.output

    strict = runner.invoke(cli, ["ingest", "timeseries", "--quiet", "--strict", "--reload"])
    assert strict.exit_code == EXIT_REJECTED, strict.output

    bad_option = runner.invoke(cli, ["ingest", "timeseries", "--on-error", "explode"])
    assert bad_option.exit_code != 0
    assert "on_error" in bad_option.output


async def _put(environment: IngestEnvironment, key: str, body: str) -> None:
    # A fresh client: the fixture's client belongs to another event loop.
    from contextlib import AsyncExitStack

    from app.storage.s3 import open_s3_client

    async with AsyncExitStack() as stack:
        s3 = await open_s3_client(environment.settings, stack)
        await s3.put_object(Bucket=environment.bucket, Key=key, Body=body.encode())
