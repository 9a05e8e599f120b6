"""Upload a generated dataset's bucket content (`mapping.csv`, `Timeseries/**`) to S3."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from app.storage.s3 import S3Client


def bucket_files(bucket_dir: Path) -> list[tuple[str, Path, int]]:
    """(object key, local path, size) for every file below `bucket_dir`, in key order."""
    return sorted(
        (path.relative_to(bucket_dir).as_posix(), path, path.stat().st_size)
        for path in bucket_dir.rglob("*")
        if path.is_file()
    )


async def upload_directory(
    s3: S3Client,
    bucket: str,
    bucket_dir: Path,
    *,
    concurrency: int = 8,
    on_uploaded: Callable[[str, int], None] | None = None,
) -> int:
    """Upload every file below `bucket_dir` under its relative key; return bytes uploaded.

    `upload_file` streams from disk and switches to multipart for large files, so memory
    stays flat whatever the dataset size.
    """
    files = await asyncio.to_thread(bucket_files, bucket_dir)
    if not files:
        raise FileNotFoundError(f"nothing to upload below {bucket_dir}")
    limit = asyncio.Semaphore(concurrency)
    uploaded = 0

    async def upload(key: str, path: Path, size: int) -> None:
        nonlocal uploaded
        async with limit:
            await s3.upload_file(str(path), bucket, key)
        uploaded += size
        if on_uploaded is not None:
            on_uploaded(key, size)

    async with asyncio.TaskGroup() as group:
        for key, path, size in files:
            group.create_task(upload(key, path, size))
    return uploaded
