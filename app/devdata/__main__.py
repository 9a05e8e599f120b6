"""Command line for the synthetic dataset.

python -m app.devdata generate --preset demo --out .data/devdata
python -m app.devdata upload --out .data/devdata      # to S3_BUCKET, per the settings
python -m app.devdata seed --preset demo              # both, via a temporary directory
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from contextlib import AsyncExitStack
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from app.core.config import Settings
from app.devdata.generator import MANIFEST_NAME, Manifest, bucket_dir_of, generate_dataset
from app.devdata.spec import DEFAULT_ROWS, DEFAULT_SEED, PRESET_ROWS, DatasetSpec
from app.devdata.upload import bucket_files, upload_directory
from app.storage.s3 import ensure_bucket, open_s3_client

DEFAULT_OUT = Path(".data/devdata")

cli = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Synthetic IoT sensor dataset tools."
)


class Preset(StrEnum):
    """Named sizes; values are the keys of spec.PRESET_ROWS."""

    TINY = "tiny"
    DEMO = "demo"
    ROWS_5M = "5m"
    ROWS_20M = "20m"
    FULL = "full"


@cli.callback()
def main() -> None:
    """Generate a dataset shaped like the real S3 bucket, and upload it."""


@cli.command()
def generate(
    preset: Annotated[
        Preset | None,
        typer.Option(help="Named size: " + ", ".join(f"{k}={v:,}" for k, v in PRESET_ROWS.items())),
    ] = None,
    rows: Annotated[
        int | None, typer.Option(help=f"Target total rows (default {DEFAULT_ROWS:,}).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = DEFAULT_OUT,
    sensors: Annotated[int | None, typer.Option(help="Number of sensors.")] = None,
    days: Annotated[float | None, typer.Option(help="Length of the data span in days.")] = None,
    start: Annotated[
        str | None, typer.Option(help="ISO start; naive values are Berlin wall time.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = DEFAULT_SEED,
    rows_per_file: Annotated[int | None, typer.Option(help="Rows per data file.")] = None,
    duplicates: Annotated[
        int | None, typer.Option(help="File boundaries whose tail is repeated in the next file.")
    ] = None,
    duplicate_rows: Annotated[
        int | None, typer.Option(help="Rows repeated at each duplicated boundary.")
    ] = None,
    events_per_kind: Annotated[int | None, typer.Option(help="Planted anomalies per kind.")] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing <out>/bucket directory.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Write <out>/bucket/{mapping.csv,Timeseries/**} plus manifest and ground truth."""
    if preset is not None and rows is not None:
        raise typer.BadParameter("give either --preset or --rows, not both")
    target_rows = PRESET_ROWS[preset.value] if preset is not None else rows or DEFAULT_ROWS
    try:
        spec = DatasetSpec.from_rows(
            target_rows,
            sensors=sensors,
            days=days,
            start=start,
            seed=seed,
            rows_per_file=rows_per_file,
            duplicate_boundaries=duplicates,
            duplicate_rows=duplicate_rows,
            events_per_kind=events_per_kind,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error

    typer.echo(
        f"generating ~{spec.expected_rows:,} rows: {spec.sensors} sensors, {spec.days:.1f} days "
        f"from {spec.start.isoformat()}, {spec.rows_per_file:,} rows/file, seed {spec.seed}"
    )
    try:
        manifest = _generate_with_progress(spec, out, overwrite=overwrite, quiet=quiet)
    except FileExistsError as error:
        typer.echo(f"error: {error} (use --overwrite)", err=True)
        raise typer.Exit(1) from error
    seconds = manifest.seconds
    typer.echo(
        f"rows {manifest.rows_written:,} (unique {manifest.unique_rows:,}, "
        f"duplicates {manifest.duplicate_rows:,}), files {len(manifest.files):,}, "
        f"{_size(manifest.bytes_written)}, {len(manifest.events)} anomalies, "
        f"{seconds:.1f} s, {manifest.rows_written / max(seconds, 1e-9):,.0f} rows/s"
    )
    typer.echo(f"bucket content: {manifest.bucket_dir}  manifest: {manifest.manifest_path}")


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e9:.2f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:.1f} MB"


def _generation_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:,.0f} rows"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def _generate_with_progress(
    spec: DatasetSpec, out: Path, *, overwrite: bool, quiet: bool
) -> Manifest:
    if quiet:
        return generate_dataset(spec, out, overwrite=overwrite)
    with _generation_progress() as progress:
        task = progress.add_task("generating", total=spec.expected_rows)

        def advance(bytes_written: int, rows_written: int) -> None:
            progress.update(task, completed=rows_written)

        manifest = generate_dataset(spec, out, progress=advance, overwrite=overwrite)
        progress.update(task, completed=manifest.rows_written, total=manifest.rows_written)
        return manifest


async def _upload(settings: Settings, bucket_dir: Path, *, quiet: bool) -> int:
    files = await asyncio.to_thread(bucket_files, bucket_dir)
    total = sum(size for _, _, size in files)
    async with AsyncExitStack() as stack:
        s3 = await open_s3_client(settings, stack)
        if await ensure_bucket(s3, settings.s3_bucket):
            typer.echo(f"created bucket {settings.s3_bucket!r}")
        if quiet:
            return await upload_directory(s3, settings.s3_bucket, bucket_dir)
        with Progress(
            TextColumn("[bold]uploading"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        ) as progress:
            task = progress.add_task("upload", total=total)
            return await upload_directory(
                s3,
                settings.s3_bucket,
                bucket_dir,
                on_uploaded=lambda _key, size: progress.advance(task, size),
            )


@cli.command()
def upload(
    out: Annotated[
        Path, typer.Option(help="Directory a `generate` run wrote (holds bucket/).")
    ] = DEFAULT_OUT,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Upload <out>/bucket to S3_BUCKET (created if missing), keys relative to bucket/."""
    if not (out / MANIFEST_NAME).exists():
        typer.echo(f"error: {out} holds no complete dataset; run `generate` first", err=True)
        raise typer.Exit(1)
    settings = Settings()
    started = time.perf_counter()
    uploaded = asyncio.run(_upload(settings, bucket_dir_of(out), quiet=quiet))
    typer.echo(
        f"uploaded {_size(uploaded)} to s3://{settings.s3_bucket}/ "
        f"in {time.perf_counter() - started:.1f} s"
    )


@cli.command()
def seed(
    preset: Annotated[Preset, typer.Option(help="Named size of the dataset.")] = Preset.DEMO,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Generate a dataset in a temporary directory and upload it to S3_BUCKET.

    For containers and fresh machines: writes nothing to the working directory.
    """
    settings = Settings()
    spec = DatasetSpec.preset(preset.value)
    with tempfile.TemporaryDirectory(prefix="sensor-devdata-") as scratch:
        manifest = _generate_with_progress(spec, Path(scratch), overwrite=False, quiet=quiet)
        uploaded = asyncio.run(_upload(settings, manifest.bucket_dir, quiet=quiet))
    typer.echo(
        f"seeded s3://{settings.s3_bucket}/ with the {preset.value!r} dataset: "
        f"{manifest.rows_written:,} rows in {len(manifest.files)} files, {_size(uploaded)}"
    )


if __name__ == "__main__":
    cli()
