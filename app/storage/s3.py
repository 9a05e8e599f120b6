"""The S3-compatible object store (MinIO in production, SeaweedFS in tests and `make dev`)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aioboto3
import aiohttp
import botocore.exceptions
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from app.core.config import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client as S3Client
else:
    S3Client = object


class StorageError(RuntimeError):
    """An S3 request failed; the message names the request and why."""


class StorageUnavailable(StorageError):
    """The store or the network failed (refused, reset, timed out, 5xx, throttled): the
    same request may well succeed a little later."""


# How a failing network or store shows up, as opposed to a request that can never succeed
# (no such key, access denied). aiobotocore wraps most transport errors in botocore's, but
# lets aiohttp's ClientPayloadError (a body cut short) through as it is.
_TRANSIENT_ERRORS = (
    botocore.exceptions.HTTPClientError,  # closed or reset connection, read timeout, body
    botocore.exceptions.ConnectionError,  # refused, connect timeout, name resolution
    botocore.exceptions.IncompleteReadError,  # a body shorter than its Content-Length
    aiohttp.ClientError,
    OSError,  # TimeoutError included
)
_TRANSIENT_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "Throttling", "RequestTimeout"}
)


@contextmanager
def storage_errors(request: str) -> Iterator[None]:
    """Raise a failure of `request` (e.g. "GET s3://bucket/key") as StorageError, or as
    StorageUnavailable when trying again may help."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "unknown")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        kind = StorageUnavailable if status >= 500 or code in _TRANSIENT_CODES else StorageError
        raise kind(f"{request}: {code} {error.get('Message', '')}".rstrip()) from exc
    except _TRANSIENT_ERRORS as exc:
        raise StorageUnavailable(f"{request}: {type(exc).__name__}: {exc}") from exc


def client_config(settings: Settings) -> AioConfig:
    return AioConfig(
        # MinIO and SeaweedFS serve buckets by path, not by virtual host name.
        s3={"addressing_style": "path"},
        # total_max_attempts counts the first attempt; botocore's max_attempts does not.
        retries={"total_max_attempts": settings.s3_request_attempts, "mode": "standard"},
        connect_timeout=settings.s3_connect_timeout_seconds,
        # aiohttp applies it to every read of the socket, so it also bounds a body that
        # stops arriving mid-object.
        read_timeout=settings.s3_read_timeout_seconds,
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
        config=client_config(settings),
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
    1,000-key pages. Raises StorageError."""
    paginator = client.get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket=bucket, Prefix=prefix).__aiter__()
    while True:
        with storage_errors(f"LIST s3://{bucket}/{prefix}"):
            try:
                page = await anext(pages)
            except StopAsyncIteration:
                return
        for item in page.get("Contents", []):
            yield ObjectInfo(key=item["Key"], etag=item["ETag"].strip('"'), size=item["Size"])


async def head_object(client: S3Client, bucket: str, key: str) -> ObjectInfo | None:
    """The object's ETag and size, None if it does not exist. Raises StorageError."""
    with storage_errors(f"HEAD s3://{bucket}/{key}"):
        try:
            head = await client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
    return ObjectInfo(key=key, etag=head["ETag"].strip('"'), size=head["ContentLength"])


async def stream_object(
    client: S3Client, bucket: str, key: str, chunk_bytes: int = 1 << 20
) -> AsyncGenerator[bytes, None]:
    """The object's bytes in chunks, never the whole object in memory. Raises
    StorageError, also when the body breaks off or stalls midway: the client's retries
    only cover the request, so the caller decides whether to start the object again."""
    request = f"GET s3://{bucket}/{key}"
    with storage_errors(request):
        response = await client.get_object(Bucket=bucket, Key=key)
    body = response["Body"]
    try:
        while True:
            with storage_errors(request):
                chunk = await body.read(chunk_bytes)
            if not chunk:
                return
            yield chunk
    finally:
        body.close()
