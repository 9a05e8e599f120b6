"""The S3-compatible object store (MinIO in production, SeaweedFS in tests and `make dev`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from app.core.config import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client as S3Client
else:
    S3Client = object


class StorageError(RuntimeError):
    pass


def client_config() -> AioConfig:
    return AioConfig(
        # MinIO and SeaweedFS serve buckets by path, not by virtual host name.
        s3={"addressing_style": "path"},
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=32,
    )


async def open_s3_client(settings: Settings, stack: AsyncExitStack) -> S3Client:
    """An S3 client that lives as long as `stack`."""
    session = aioboto3.Session()
    client = session.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=(
            settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None
        ),
        aws_secret_access_key=(
            settings.s3_secret_access_key.get_secret_value()
            if settings.s3_secret_access_key
            else None
        ),
        config=client_config(),
    )
    return await stack.enter_async_context(client)


async def check_bucket(client: S3Client, bucket: str) -> None:
    """Raise StorageError, saying why, unless the bucket exists and we may access it."""
    try:
        await client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "unknown")
        reason = {"404": "does not exist", "NoSuchBucket": "does not exist", "403": "access denied"}
        raise StorageError(f"bucket {bucket!r}: {reason.get(code, code)}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"object store unreachable: {exc}") from exc


async def ensure_bucket(client: S3Client, bucket: str) -> bool:
    """Create the bucket if it is missing; return whether it was created."""
    try:
        await client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchBucket"}:
            raise
    await client.create_bucket(Bucket=bucket)
    return True


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    etag: str
    size: int


async def list_objects(client: S3Client, bucket: str, prefix: str) -> AsyncIterator[ObjectInfo]:
    """Every object under `prefix`, recursively, following continuation tokens past the
    1,000-key pages."""
    paginator = client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield ObjectInfo(key=item["Key"], etag=item["ETag"].strip('"'), size=item["Size"])


async def head_object(client: S3Client, bucket: str, key: str) -> ObjectInfo | None:
    try:
        head = await client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise
    return ObjectInfo(key=key, etag=head["ETag"].strip('"'), size=head["ContentLength"])


async def stream_object(
    client: S3Client, bucket: str, key: str, chunk_bytes: int = 1 << 20
) -> AsyncIterator[bytes]:
    """The object's bytes in chunks, never the whole object in memory."""
    response = await client.get_object(Bucket=bucket, Key=key)
    body = response["Body"]
    try:
        async for chunk in body.iter_chunks(chunk_bytes):
            yield chunk
    finally:
        body.close()
