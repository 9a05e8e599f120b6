"""Synthetic IoT dataset shaped like the real S3 bucket (``python -m app.devdata``).

See :mod:`app.devdata.generator` for the output layout and design.
"""

from app.devdata.generator import (
    ANOMALY_KINDS,
    BUCKET_DIR_NAME,
    DATA_SUBDIRS,
    GROUND_TRUTH_NAME,
    MAGNITUDE_UNITS,
    MANIFEST_NAME,
    MAPPING_KEY,
    AnomalyEvent,
    AnomalyKind,
    DataFileInfo,
    FileVariant,
    Manifest,
    ProgressCallback,
    TimestampStyle,
    bucket_dir_of,
    generate_dataset,
    list_bucket_files,
    read_ground_truth,
    read_manifest_json,
)
from app.devdata.spec import (
    BERLIN,
    CANONICAL_START,
    DEFAULT_ROWS,
    DEFAULT_SEED,
    PRESET_ROWS,
    DatasetSpec,
    parse_start,
)

__all__ = [
    "ANOMALY_KINDS",
    "BERLIN",
    "BUCKET_DIR_NAME",
    "CANONICAL_START",
    "DATA_SUBDIRS",
    "DEFAULT_ROWS",
    "DEFAULT_SEED",
    "GROUND_TRUTH_NAME",
    "MAGNITUDE_UNITS",
    "MANIFEST_NAME",
    "MAPPING_KEY",
    "PRESET_ROWS",
    "AnomalyEvent",
    "AnomalyKind",
    "DataFileInfo",
    "DatasetSpec",
    "FileVariant",
    "Manifest",
    "ProgressCallback",
    "TimestampStyle",
    "bucket_dir_of",
    "generate_dataset",
    "list_bucket_files",
    "parse_start",
    "read_ground_truth",
    "read_manifest_json",
]
