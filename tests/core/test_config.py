from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import ApiScope, Settings

ALL_NAMES = [
    *("METADATA_DATABASE_URL", "TIMESERIES_DATABASE_URL", "S3_ENDPOINT_URL", "S3_BUCKET"),
    *("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "S3_REGION", "MAPPING_KEY", "API_KEYS"),
    *("TIMESERIES_PREFIX", "SOURCE_TIMEZONE", "MINIO_ENDPOINT", "MINIO_ACCESS_KEY"),
    "MINIO_SECRET_KEY",
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ALL_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_match_the_challenge_layout() -> None:
    settings = Settings()
    assert settings.s3_bucket == "code-challenge-data"
    assert settings.mapping_key == "mapping.csv"
    assert settings.timeseries_prefix == "Timeseries/"
    assert settings.source_timezone == "Europe/Berlin"
    assert settings.api_keys == ()


def test_reads_the_service_names_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_ENDPOINT_URL", "https://s3.example.com")
    monkeypatch.setenv("S3_ACCESS_KEY_ID", "AKIA")
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("S3_BUCKET", "other-bucket")
    monkeypatch.setenv("TIMESERIES_PREFIX", "data")
    settings = Settings()
    assert settings.s3_endpoint_url == "https://s3.example.com"
    assert settings.s3_access_key_id is not None
    assert settings.s3_access_key_id.get_secret_value() == "AKIA"
    assert settings.s3_bucket == "other-bucket"
    assert settings.timeseries_prefix == "data/"


def test_accepts_the_original_challenge_minio_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIO_ENDPOINT", "minio:9000")
    monkeypatch.setenv("MINIO_ACCESS_KEY", "minioadmin")
    monkeypatch.setenv("MINIO_SECRET_KEY", "miniosecret")
    settings = Settings()
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.s3_access_key_id is not None
    assert settings.s3_access_key_id.get_secret_value() == "minioadmin"
    assert settings.s3_secret_access_key is not None
    assert settings.s3_secret_access_key.get_secret_value() == "miniosecret"


def test_service_names_win_over_minio_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIO_ENDPOINT", "minio:9000")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://seaweed:8333")
    assert Settings().s3_endpoint_url == "http://seaweed:8333"


def test_reads_a_dotenv_file_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MINIO_ENDPOINT=127.0.0.1:9000\nS3_BUCKET=from-dotenv\n")
    settings = Settings()
    assert settings.s3_endpoint_url == "http://127.0.0.1:9000"
    assert settings.s3_bucket == "from-dotenv"


def test_api_keys_carry_scopes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "read:reader-key, write:writer-key,both-key")
    keys = Settings().api_keys
    assert [key.secret.get_secret_value() for key in keys] == [
        "reader-key",
        "writer-key",
        "both-key",
    ]
    assert [key.scopes for key in keys] == [
        frozenset({ApiScope.READ}),
        frozenset({ApiScope.WRITE}),
        frozenset({ApiScope.READ, ApiScope.WRITE}),
    ]


def test_api_keys_carry_labels_or_a_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "grafana@read:reader-key,ops.team@both-key,bare-key")
    keys = Settings(_env_file=None).api_keys
    assert [key.label for key in keys] == [
        "grafana",
        "ops.team",
        "key-" + hashlib.sha256(b"bare-key").hexdigest()[:8],
    ]
    assert keys[0].scopes == frozenset({ApiScope.READ})
    assert keys[1].scopes == frozenset(ApiScope)
    assert [key.to_entry() for key in keys] == [
        "grafana@read:reader-key",
        "ops.team@both-key",
        "bare-key",
    ]


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("same-key,read:same-key", "the same key appears twice"),
        ("bad label@key", "API key label 'bad label'"),
        ("admin:key", "unknown API key scope 'admin'"),
        ("ops@read:", "has a label or scope but no key"),
    ],
)
def test_bad_api_keys_are_refused_saying_why(
    monkeypatch: pytest.MonkeyPatch, value: str, complaint: str
) -> None:
    monkeypatch.setenv("API_KEYS", value)
    with pytest.raises(ValidationError, match=re.escape(complaint)):
        Settings(_env_file=None)


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("API_KEYS", "admin:key", "unknown API key scope"),
        ("API_KEYS", "read:", "no key"),
        ("SOURCE_TIMEZONE", "Mars/Olympus", "unknown IANA time zone"),
        ("METADATA_DATABASE_URL", "mysql://db/x", "postgresql://"),
        ("S3_ENDPOINT_URL", "ftp://host:21", "http(s)://"),
        ("S3_BUCKET", "x", "at least 3"),
    ],
)
def test_refuses_nonsense(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, complaint: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        Settings()


def test_describe_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METADATA_DATABASE_URL", "postgresql://app:hunter2@db:5432/meta")
    monkeypatch.setenv("API_KEYS", "supersecret")
    described = str(Settings().describe())
    assert "hunter2" not in described
    assert "supersecret" not in described
    assert "app:***@db:5432/meta" in described


def test_example_env_documents_every_setting() -> None:
    from app.core.config import REPOSITORY_ROOT

    text = (REPOSITORY_ROOT / "example.env").read_text()
    documented = {
        line.lstrip("# ").split("=", 1)[0]
        for line in text.splitlines()
        if "=" in line and line.lstrip("# ").split("=", 1)[0].isupper()
    }
    expected = {name.upper() for name in Settings.model_fields} - {"MIGRATIONS_DIR"}
    expected |= {"MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"}
    assert expected <= documented, f"missing from example.env: {sorted(expected - documented)}"
    assert documented <= expected, f"example.env names unknown settings: {documented - expected}"


def test_to_environment_reproduces_the_settings_in_another_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = Settings(
        _env_file=None,
        metadata_database_url="postgresql://app:pw@db:5432/meta",
        s3_endpoint_url="http://s3:9000",
        s3_access_key_id="AKIA",
        s3_secret_access_key="secret",
        timeseries_prefix="data/",
        api_keys="read:reader-key,ops@write:writer-key,both-key",
    )
    environment = original.to_environment()
    assert environment["API_KEYS"] == "read:reader-key,ops@write:writer-key,both-key"
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert Settings(_env_file=None) == original
