"""What the analysis processes run. Each function takes the raw bytes of a binary
`COPY (SELECT ts, value ...) TO STDOUT` and parses them here, so that neither parsing nor
fitting nor drawing ever runs on the service's event loop.

Importing this module is cheap (the service imports it to name these functions): the
algorithm's libraries load inside the functions, in the analysis processes only."""

from __future__ import annotations

import os
import threading
import time
from typing import Final

import numpy as np

from app.anomalies.model import Detection, DetectionParams, FloatArray, IntArray

# PostgreSQL's binary COPY: an 11-byte signature, flags and extension length (19 bytes),
# then per row a field count (int16) and per field a length (int32) and the value, big
# endian; a trailer of int16 -1. Both columns are fixed width, so rows are a numpy dtype.
COPY_HEADER_BYTES: Final = 19
COPY_TRAILER_BYTES: Final = 2
ROW_DTYPE: Final = np.dtype(
    [("fields", ">i2"), ("ts_len", ">i4"), ("ts", ">i8"), ("value_len", ">i4"), ("value", ">f8")]
)
# timestamptz counts microseconds from 2000-01-01 UTC.
POSTGRES_EPOCH_US: Final = 946_684_800_000_000


def exit_with_parent(parent_pid: int) -> None:
    """Pool initializer. A worker blocks on its task queue, whose other end its siblings
    hold too, so it would outlive a service process killed with SIGKILL: this thread ends
    it within a second of its parent's death instead."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def parse_series(data: bytes) -> tuple[IntArray, FloatArray]:
    """(microseconds since the Unix epoch, values) of a binary COPY of (ts, value)."""
    body = memoryview(data)[COPY_HEADER_BYTES : len(data) - COPY_TRAILER_BYTES]
    rows = np.frombuffer(body, dtype=ROW_DTYPE)
    timestamps: IntArray = rows["ts"].astype(np.int64) + POSTGRES_EPOCH_US
    values: FloatArray = rows["value"].astype(np.float64)
    return timestamps, values


def analyse(data: bytes, params: DetectionParams) -> Detection:
    from app.anomalies.detection import detect  # ruptures, statsmodels: in this process only

    timestamps, values = parse_series(data)
    detection = detect(timestamps, values, params)
    # The per-reading arrays are for plots only; leave them out of the pickled result.
    detection.expected = detection.band = None
    return detection


def plot(data: bytes, params: DetectionParams, title: str, zone: str) -> bytes:
    from app.anomalies.detection import detect
    from app.anomalies.plotting import render_png  # matplotlib only where it draws

    timestamps, values = parse_series(data)
    detection = detect(timestamps, values, params)
    return render_png(timestamps, values, detection, title=title, zone=zone)


def warm_up() -> None:
    """Imports and first-call costs paid at startup rather than by the first request."""
    import app.anomalies.plotting  # noqa: F401
    from app.anomalies.detection import detect

    rng = np.random.default_rng(0)
    timestamps = np.arange(500, dtype=np.int64) * 900_000_000
    detect(timestamps, rng.normal(size=500), DetectionParams())
