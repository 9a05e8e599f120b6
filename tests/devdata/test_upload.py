"""Upload of generated datasets to a real S3 server (SeaweedFS)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.core.config import Settings
from app.devdata import DatasetSpec, generate_dataset, list_bucket_files
from app.devdata.__main__ import cli
from app.storage.s3 import open_s3_client
from tests.conftest import S3Endpoint


@pytest.fixture
def s3_environment(s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Point the CLI's settings at the test S3 server and a bucket of this test's own."""
    bucket = f"upload-{tmp_path.name.replace('_', '-').lower()}"[:63]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_endpoint.url)
    monkeypatch.setenv("S3_ACCESS_KEY_ID", s3_endpoint.access_key)
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", s3_endpoint.secret_key)
    monkeypatch.setenv("S3_BUCKET", bucket)
    return bucket


async def _bucket_contents(settings: Settings) -> dict[str, bytes]:
    async with AsyncExitStack() as stack:
        s3 = await open_s3_client(settings, stack)
        contents = {}
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=settings.s3_bucket):
            for item in page.get("Contents", []):
                body = await s3.get_object(Bucket=settings.s3_bucket, Key=item["Key"])
                contents[item["Key"]] = await body["Body"].read()
        return contents


def test_upload_puts_every_bucket_file_under_its_relative_key(
    s3_environment: str, tmp_path: Path
) -> None:
    out = tmp_path / "dataset"
    generate_dataset(DatasetSpec.preset("tiny"), out)
    result = CliRunner().invoke(cli, ["upload", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    uploaded = asyncio.run(_bucket_contents(Settings()))
    expected = {key: path.read_bytes() for key, path in list_bucket_files(out)}
    assert uploaded == expected
    assert "mapping.csv" in uploaded
    assert any(key.startswith("Timeseries/archive/") for key in uploaded)
    assert not any(key.endswith(".json") for key in uploaded), "meta files must stay local"


def test_upload_refuses_an_incomplete_dataset(s3_environment: str, tmp_path: Path) -> None:
    (tmp_path / "partial/bucket").mkdir(parents=True)
    result = CliRunner().invoke(cli, ["upload", "--out", str(tmp_path / "partial")])
    assert result.exit_code == 1
    assert "no complete dataset" in result.output


def test_seed_generates_and_uploads_without_writing_to_the_working_directory(
    s3_environment: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(cli, ["seed", "--preset", "tiny", "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"seeded s3://{s3_environment}/" in result.output
    assert list(tmp_path.iterdir()) == []
    uploaded = asyncio.run(_bucket_contents(Settings()))
    assert "mapping.csv" in uploaded
    assert sum(key.startswith("Timeseries/") for key in uploaded) >= 8
