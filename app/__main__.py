"""Command line: `python -m app migrate | ingest mapping | ingest timeseries | readings | serve`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated
from uuid import UUID

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from app.core.config import Settings
from app.core.lifespan import Resources, migrate_databases, open_resources
from app.ingest import service as ingest_service
from app.ingest.schemas import TimeseriesIngestRequest
from app.jobs.exceptions import JobAlreadyRunning
from app.jobs.schemas import Job, JobStatus
from app.jobs.service import get_job
from app.readings import client as readings_client

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="sensor-service commands")
ingest_cli = typer.Typer(no_args_is_help=True, help="Load the bucket into the databases.")
cli.add_typer(ingest_cli, name="ingest")

# Exit codes: 0 succeeded (or completed with rejected rows, unless --strict), 1 failed or
# cancelled, 2 a job of this kind is already running elsewhere, 3 rows rejected with --strict.
EXIT_FAILED, EXIT_BUSY, EXIT_REJECTED = 1, 2, 3


@cli.command()
def migrate() -> None:
    """Apply pending db_init/ migrations to the metadata and timeseries databases."""
    settings = Settings()
    applied = asyncio.run(migrate_databases(settings))
    for database, versions in applied.items():
        done = ", ".join(versions) if versions else "up to date"
        typer.echo(f"{database.value}: {done}")


async def _run_job(
    start: Callable[[Resources], Awaitable[UUID]], settings: Settings, quiet: bool
) -> Job:
    console = Console(stderr=True)
    async with open_resources(settings) as resources:
        job_id = await start(resources)
        console.print(f"job {job_id} started")
        context = resources.jobs.live_context(job_id)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[rows]} rows"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
        ) as progress:
            task = progress.add_task("ingesting", total=None, rows="0")

            def refresh() -> None:
                if context is None:
                    return
                counters = context.counters
                progress.update(
                    task,
                    total=counters.bytes_total or None,
                    completed=counters.bytes_done,
                    rows=f"{counters.rows_read:,}",
                    description=f"{counters.objects_done}/{counters.objects_total} objects",
                )

            waiter = asyncio.ensure_future(resources.jobs.wait(job_id))
            while not waiter.done():
                refresh()
                await asyncio.wait([waiter], timeout=0.2)
            refresh()
        async with resources.metadata_pool.acquire() as connection:
            return await get_job(connection, job_id)


def _report(job: Job, settings: Settings, strict: bool) -> None:
    typer.echo(
        f"{job.status.value}: {job.objects_done}/{job.objects_total} objects, "
        f"{job.rows_read:,} rows read, {job.rows_inserted:,} inserted, "
        f"{job.rows_duplicate:,} duplicate, {job.rows_rejected:,} rejected"
        + (f", {job.rows_per_second:,.0f} rows/s" if job.rows_per_second else "")
    )
    for error in job.errors[:10]:
        typer.echo(f"  {error.object_key}:{error.line_number}: {error.reason}", err=True)
    if job.rejected_rows_key:
        typer.echo(f"every rejected row: s3://{settings.s3_bucket}/{job.rejected_rows_key}")
    if job.failure_reason:
        typer.echo(f"reason: {job.failure_reason}", err=True)
    if job.status in {JobStatus.FAILED, JobStatus.CANCELLED}:
        raise typer.Exit(EXIT_FAILED)
    if strict and job.status is JobStatus.COMPLETED_WITH_ERRORS:
        raise typer.Exit(EXIT_REJECTED)


def _run_and_report(
    start: Callable[[Resources], Awaitable[UUID]], quiet: bool, strict: bool
) -> None:
    settings = Settings()
    try:
        job = asyncio.run(_run_job(start, settings, quiet))
    except JobAlreadyRunning as busy:
        typer.echo(busy.message, err=True)
        raise typer.Exit(EXIT_BUSY) from None
    _report(job, settings, strict)


QuietOption = Annotated[bool, typer.Option(help="No progress bar.")]
StrictOption = Annotated[bool, typer.Option(help="Exit with 3 if any row was rejected.")]


@ingest_cli.command("mapping")
def ingest_mapping(quiet: QuietOption = False, strict: StrictOption = False) -> None:
    """Load MAPPING_KEY (sensor_name;sensor_uuid) into the sensor registry."""
    _run_and_report(ingest_service.start_mapping_job, quiet, strict)


@ingest_cli.command("timeseries")
def ingest_timeseries(
    prefix: Annotated[str | None, typer.Option(help="Instead of TIMESERIES_PREFIX.")] = None,
    on_error: Annotated[str, typer.Option(help="skip_row or abort.")] = "skip_row",
    max_errors: Annotated[int | None, typer.Option(help="Stop after this many rejections.")] = None,
    reload: Annotated[bool, typer.Option(help="Ignore the ledger of loaded objects.")] = False,
    quiet: QuietOption = False,
    strict: StrictOption = False,
) -> None:
    """Load every .csv / .csv.gz under the prefix into readings, exactly once."""
    try:
        request = TimeseriesIngestRequest(
            prefix=prefix,
            on_error=on_error,
            max_errors=max_errors,
            reload=reload,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None

    async def start(resources: Resources) -> UUID:
        return await ingest_service.start_timeseries_job(resources, request)

    _run_and_report(start, quiet, strict)


@cli.command()
def readings(
    sensor_name: Annotated[str, typer.Option(help="The sensor's name, e.g. sensor_00007.")],
    start: Annotated[str, typer.Option(help="Inclusive; ISO 8601, naive = SOURCE_TIMEZONE.")],
    end: Annotated[str, typer.Option(help="Exclusive; same forms as --start.")],
    page_number: Annotated[int | None, typer.Option(help="Print only this page (JSON).")] = None,
    page_size: Annotated[int, typer.Option(help="Readings per page.")] = 1000,
    output_format: Annotated[
        str, typer.Option("--format", help="csv: the whole range; json: one page.")
    ] = "csv",
    tz: Annotated[str, typer.Option(help="IANA zone of the printed timestamps.")] = "UTC",
    url: Annotated[str, typer.Option(help="The service.")] = readings_client.DEFAULT_URL,
    api_key: Annotated[str | None, typer.Option(envvar="SENSOR_API_KEY")] = None,
) -> None:
    """Print a sensor's readings from a running service, as the original scripts did."""
    try:
        if output_format == "json" or page_number is not None:
            body = readings_client.fetch_readings_page(
                sensor_name,
                start,
                end,
                page=page_number or 1,
                page_size=page_size,
                base_url=url,
                tz=tz,
                api_key=api_key,
            )
            typer.echo(json.dumps(body, indent=1))
            return
        if output_format != "csv":
            raise typer.BadParameter("--format is csv or json")
        frame = readings_client.read_readings(
            sensor_name, start, end, base_url=url, tz=tz, api_key=api_key
        )
        typer.echo(frame.to_csv(), nl=False)
    except readings_client.ReadingsRequestFailed as failed:
        typer.echo(str(failed), err=True)
        raise typer.Exit(EXIT_FAILED) from None


@cli.command()
def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API with uvicorn (the same as `uvicorn app.main:app --no-access-log`)."""
    import uvicorn

    # The app configures logging itself (LOG_FORMAT, LOG_LEVEL) and writes its own access
    # lines, with the request id; uvicorn's would be a second, differently formatted one.
    uvicorn.run("app.main:app", host=host, port=port, log_config=None, access_log=False)


if __name__ == "__main__":
    cli()
