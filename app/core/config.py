"""Service settings, read once from the environment and `.env`.

Names follow the service's own convention (`S3_*`), but the names that users of the
original challenge already have in their `.env` (`MINIO_ENDPOINT`, `MINIO_ACCESS_KEY`,
`MINIO_SECRET_KEY`) are accepted too, so an existing `.env` keeps working.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


class ApiScope(StrEnum):
    READ = "read"
    WRITE = "write"


_KEY_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class ApiKey:
    """One entry of `API_KEYS`: `[label@][scope:]KEY`, where scope is `read` or `write` and a
    key without one has both. The label names the key's holder in `updated_by` and logs;
    without one it is `key-` and the first 8 hex digits of the key's SHA-256, which
    identifies the key without revealing it."""

    secret: SecretStr
    scopes: frozenset[ApiScope]
    label: str

    @classmethod
    def parse(cls, entry: str) -> ApiKey:
        label, at, rest = entry.partition("@")
        if not at:
            label, rest = "", entry
        elif not _KEY_LABEL.fullmatch(label):
            raise ValueError(
                f"API key label {label!r} must be 1-64 letters, digits, '_', '.' or '-'"
            )
        scope_name, separator, secret = rest.partition(":")
        if not separator:
            scopes, secret = frozenset(ApiScope), rest
        else:
            try:
                scopes = frozenset({ApiScope(scope_name.strip().lower())})
            except ValueError:
                allowed = ", ".join(s.value for s in ApiScope)
                raise ValueError(
                    f"unknown API key scope {scope_name!r} (allowed: {allowed})"
                ) from None
        if not secret:
            raise ValueError("an API_KEYS entry has a label or scope but no key")
        return cls(SecretStr(secret), scopes, label or cls.fingerprint(secret))

    @staticmethod
    def fingerprint(secret: str) -> str:
        return "key-" + hashlib.sha256(secret.encode()).hexdigest()[:8]

    def to_entry(self) -> str:
        """The `API_KEYS` entry this key was parsed from (bare when it has both scopes)."""
        secret = self.secret.get_secret_value()
        entry = secret
        if self.scopes != frozenset(ApiScope):
            (scope,) = self.scopes
            entry = f"{scope.value}:{secret}"
        if self.label != self.fingerprint(secret):
            entry = f"{self.label}@{entry}"
        return entry


def _redact_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    metadata_database_url: str = "postgresql://postgres@127.0.0.1:5432/sensor_metadata"
    timeseries_database_url: str = "postgresql://postgres@127.0.0.1:5432/sensor_timeseries"

    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("S3_ENDPOINT_URL", "MINIO_ENDPOINT"),
        description="S3 API endpoint; MINIO_ENDPOINT's bare host:port gets http://.",
    )
    s3_access_key_id: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("S3_ACCESS_KEY_ID", "MINIO_ACCESS_KEY")
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("S3_SECRET_ACCESS_KEY", "MINIO_SECRET_KEY")
    )
    s3_bucket: str = Field(default="code-challenge-data", min_length=3, max_length=63)
    s3_region: str = "us-east-1"
    mapping_key: str = Field(default="mapping.csv", min_length=1)
    timeseries_prefix: str = "Timeseries/"
    source_timezone: str = "Europe/Berlin"

    dst_ambiguous: Literal["infer", "earliest", "latest", "reject"] = Field(
        default="infer",
        description="Naive times in the repeated autumn hour: infer from row order, "
        "take the first (summer) or second (winter) occurrence, or reject the row.",
    )
    dst_nonexistent: Literal["shift_forward", "reject"] = Field(
        default="shift_forward",
        description="Naive times in the skipped spring hour: read with the offset before the "
        "gap (02:30 -> 03:30 summer time), or reject the row.",
    )
    ingest_workers: int = Field(
        default=2, ge=1, le=16, description="Objects loaded in parallel, one connection each."
    )

    # Faults. A stalled store must not hang a job: every S3 read has a deadline, and an
    # object whose transfer fails is restarted a bounded number of times.
    s3_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Longest wait for a connection to the object store."
    )
    s3_read_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest wait for the next bytes of an S3 response, body included.",
    )
    s3_request_attempts: int = Field(
        default=5,
        ge=1,
        le=20,
        description="Attempts of one S3 request by the client, the first included (botocore "
        "standard retries); they cover errors before a response body, not while it streams.",
    )
    ingest_object_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Attempts to load one object when the object store fails, also while "
        "it streams; each attempt starts the object again in a new transaction.",
    )
    ingest_retry_backoff_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Wait before the second attempt of an object; it doubles for each "
        "further attempt, plus up to as much random jitter.",
    )
    job_shutdown_grace_seconds: float = Field(
        default=5.0,
        ge=0,
        description="On shutdown, how long running jobs get to stop at a batch boundary "
        "before they are interrupted.",
    )
    job_record_retry_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a finishing job keeps retrying to record its end while the "
        "metadata database is unreachable.",
    )

    live_write_max_bytes: int = Field(
        default=16 << 20,
        ge=1024,
        description="Largest POST /readings body (bytes); a larger one gets 413.",
    )
    live_write_max_rows: int = Field(
        default=100_000,
        ge=1,
        description="Most readings one POST /readings may carry; more get 413.",
    )

    api_keys: Annotated[tuple[ApiKey, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated `[label@][read:|write:]KEY` entries; X-API-Key must match "
        "one. Empty: reads need no key and every write is refused.",
    )

    analysis_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=64,
        description="Processes fitting anomaly models (CPU-bound work off the event loop).",
    )
    analysis_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Longest one anomaly request may take, queueing included."
    )
    analysis_max_pending: int = Field(
        default=16, ge=1, description="Anomaly requests in progress or waiting; more get 503."
    )
    analysis_max_points: int = Field(
        default=2_000_000, ge=1000, description="Most readings one anomaly request analyses."
    )
    analysis_prewarm: bool = Field(
        default=True, description="Start the analysis processes at startup, not on first use."
    )

    migrate_on_startup: bool = True
    migrations_dir: Path = REPOSITORY_ROOT / "db_init"
    db_pool_min_size: int = Field(default=2, ge=0)
    # Enough for ~20 concurrent reads plus ingestion workers per database.
    db_pool_max_size: int = Field(default=24, ge=1)
    db_command_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Client-side timeout of one SQL command (asyncpg)."
    )
    db_statement_timeout_seconds: float = Field(
        default=30.0,
        ge=0,
        description="PostgreSQL statement_timeout of the service's sessions (0: none); a "
        "request whose query runs longer gets 422. CSV/NDJSON streams are exempt.",
    )
    request_max_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        description="Largest request body (bytes) of every endpoint but POST /readings "
        "(LIVE_WRITE_MAX_BYTES); a larger one gets 413.",
    )
    readings_json_max_days: int = Field(
        default=3660,
        ge=1,
        description="Widest [start, end) of a JSON readings page or aggregate, in days; "
        "CSV/NDJSON streams have no such limit.",
    )
    startup_timeout_seconds: float = Field(
        default=30.0, ge=0, description="How long startup waits for the databases to accept us."
    )
    readiness_timeout_seconds: float = Field(default=2.0, gt=0)
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="json: one JSON object per line, for log pipelines; text: for people "
        "(`make dev` uses it unless LOG_FORMAT is set).",
    )

    @field_validator("metadata_database_url", "timeseries_database_url")
    @classmethod
    def _postgres_dsn(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in {"postgresql", "postgres"}:
            raise ValueError(f"expected a postgresql:// URL, got scheme {scheme!r}")
        return value

    @field_validator("s3_endpoint_url", mode="before")
    @classmethod
    def _endpoint_with_scheme(cls, value: Any) -> Any:
        # MINIO_ENDPOINT is host:port without a scheme, as the minio client takes it.
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            if "://" not in value:
                value = f"http://{value}"
            if urlsplit(value).scheme not in {"http", "https"}:
                raise ValueError(f"S3 endpoint must be http(s)://host:port, got {value!r}")
        return value

    @field_validator("timeseries_prefix")
    @classmethod
    def _prefix_is_a_folder(cls, value: str) -> str:
        value = value.lstrip("/")
        return value if not value or value.endswith("/") else f"{value}/"

    @field_validator("source_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            entries = [entry.strip() for entry in value.split(",")]
            keys = tuple(ApiKey.parse(entry) for entry in entries if entry)
            secrets = [key.secret.get_secret_value() for key in keys]
            if len(set(secrets)) != len(secrets):
                raise ValueError("the same key appears twice in API_KEYS")
            return keys
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"}:
            raise ValueError(f"unknown log level {value!r}")
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format_lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def source_zone(self) -> ZoneInfo:
        return ZoneInfo(self.source_timezone)

    def to_environment(self) -> dict[str, str]:
        """Environment variables that reproduce these settings' connections and data rules
        in another process (a server started by tests, a CLI in another terminal)."""
        secrets = {
            "S3_ACCESS_KEY_ID": self.s3_access_key_id,
            "S3_SECRET_ACCESS_KEY": self.s3_secret_access_key,
        }
        environment = {
            "METADATA_DATABASE_URL": self.metadata_database_url,
            "TIMESERIES_DATABASE_URL": self.timeseries_database_url,
            "S3_ENDPOINT_URL": self.s3_endpoint_url or "",
            "S3_BUCKET": self.s3_bucket,
            "S3_REGION": self.s3_region,
            "MAPPING_KEY": self.mapping_key,
            "TIMESERIES_PREFIX": self.timeseries_prefix,
            "SOURCE_TIMEZONE": self.source_timezone,
            "API_KEYS": ",".join(key.to_entry() for key in self.api_keys),
        }
        environment.update(
            {name: value.get_secret_value() for name, value in secrets.items() if value}
        )
        return environment

    def describe(self) -> dict[str, str]:
        """Settings safe to print: DSN passwords and S3 secrets are masked."""
        return {
            "metadata_database_url": _redact_dsn(self.metadata_database_url),
            "timeseries_database_url": _redact_dsn(self.timeseries_database_url),
            "s3_endpoint_url": self.s3_endpoint_url or "(AWS default)",
            "s3_bucket": self.s3_bucket,
            "mapping_key": self.mapping_key,
            "timeseries_prefix": self.timeseries_prefix,
            "source_timezone": self.source_timezone,
            "api_keys": f"{len(self.api_keys)} configured",
        }
