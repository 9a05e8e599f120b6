"""Command line: `python -m app migrate` (more commands arrive with ingestion and readings)."""

from __future__ import annotations

import asyncio

import typer

from app.core.config import Settings
from app.core.lifespan import migrate_databases

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="sensor-service commands")


@cli.command()
def migrate() -> None:
    """Apply pending db_init/ migrations to the metadata and timeseries databases."""
    settings = Settings()
    applied = asyncio.run(migrate_databases(settings))
    for database, versions in applied.items():
        done = ", ".join(versions) if versions else "up to date"
        typer.echo(f"{database.value}: {done}")


@cli.command()
def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the API with uvicorn (the same as `uvicorn app.main:app`)."""
    import uvicorn

    uvicorn.run("app.main:app", host=host, port=port)


if __name__ == "__main__":
    cli()
