"""API keys: who may read and who may write.

Every route outside /healthz, /readyz and the docs depends on `authorize` (added once, where
the routers are included). The scope a request needs follows from its method: GET and HEAD
read, every other method (ingest, scan, register, change, delete, live writes) writes.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from app.core.config import ApiKey, ApiScope
from app.core.deps import SettingsDep
from app.core.errors import Forbidden, Unauthorized

logger = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
READ_METHODS = frozenset({"GET", "HEAD"})

# Declares the scheme in the OpenAPI, so the Swagger UI's Authorize button fills the header.
# auto_error=False: a missing key gets our own 401 body, not FastAPI's 403.
api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="ApiKey",
    description="A key from `API_KEYS`. `read:` keys may GET, `write:` keys may change "
    "data (ingest, scan, register, delete, POST /readings), bare keys may do both.",
    auto_error=False,
)


@dataclass(frozen=True)
class Principal:
    """Who sent the request: the key's label, or anonymous when API_KEYS is empty."""

    label: str | None
    scopes: frozenset[ApiScope]


ANONYMOUS_READER = Principal(None, frozenset({ApiScope.READ}))


def find_key(keys: tuple[ApiKey, ...], presented: str) -> ApiKey | None:
    """The configured key equal to `presented`, comparing with every key in constant time
    (no early exit), so response times say nothing about how much of a key was right."""
    candidate = presented.encode()
    found = None
    for key in keys:
        if hmac.compare_digest(key.secret.get_secret_value().encode(), candidate):
            found = key
    return found


def needed_scope(method: str) -> ApiScope:
    return ApiScope.READ if method in READ_METHODS else ApiScope.WRITE


async def authorize(
    request: Request,
    settings: SettingsDep,
    presented: Annotated[str | None, Security(api_key_header)],
) -> Principal:
    scope = needed_scope(request.method)
    if not settings.api_keys:
        if scope is ApiScope.WRITE:
            raise Forbidden(
                "writes are disabled because API_KEYS is empty; set API_KEYS "
                "(e.g. API_KEYS=write:<key>) and send the key in X-API-Key"
            )
        return ANONYMOUS_READER
    if not presented:
        raise Unauthorized(f"missing API key: send one of API_KEYS in the {API_KEY_HEADER} header")
    key = find_key(settings.api_keys, presented)
    if key is None:
        raise Unauthorized(f"unknown API key in {API_KEY_HEADER}")
    if scope not in key.scopes:
        raise Forbidden(
            f"the key {key.label!r} has no {scope.value} scope; "
            f"{request.method} needs a key with the {scope.value} scope"
        )
    return Principal(key.label, key.scopes)


PrincipalDep = Annotated[Principal, Depends(authorize)]
