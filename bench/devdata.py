"""Throughput of the synthetic dataset generator against a plain-write disk ceiling.

    python -m bench.devdata --preset demo          (or: python bench/devdata.py --preset 5m)

Generates the preset into a temporary directory, then writes the same number of bytes as a
repeated CSV line with an ordinary buffered file write in the same directory. The ratio says
how close generation gets to simply writing bytes to that disk.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.devdata import PRESET_ROWS, DatasetSpec, generate_dataset

SAMPLE_LINE = (
    b"2013-06-01 12:34:00+02:00;2b0c1a4e-8d3f-4a57-9e61-0f2d7c9b5a13;-123.45678901234568\n"
)
WRITE_BLOCK = 8 << 20


class PeakRssSampler:
    """Samples this process's RSS in a background thread (psutil has no peak RSS on Linux)."""

    def __init__(self, interval: float = 0.02) -> None:
        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = self._process.memory_info().rss

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def plain_write(path: Path, total_bytes: int) -> float:
    """Seconds to write ``total_bytes`` of a repeated line with a buffered file write."""
    block = SAMPLE_LINE * (WRITE_BLOCK // len(SAMPLE_LINE))
    started = time.perf_counter()
    with path.open("wb") as handle:
        remaining = total_bytes
        while remaining > 0:
            remaining -= handle.write(block[:remaining])
    return time.perf_counter() - started


def pandas_to_csv_rows_per_second(path: Path, rows: int = 1_000_000) -> float:
    """The notebook way: a DataFrame of the same columns written with DataFrame.to_csv."""
    rng = np.random.default_rng(0)
    minutes = np.sort(rng.integers(0, 1440 * 30, rows))
    frame = pd.DataFrame(
        {
            "timestamp": pd.Timestamp("2013-06-01", tz="Europe/Berlin")
            + pd.to_timedelta(minutes, unit="min"),
            "sensor_uuid": rng.choice([str(uuid.uuid4()) for _ in range(500)], rows),
            "sensor_value": rng.normal(0, 300, rows),
        }
    )
    started = time.perf_counter()
    frame.to_csv(path, sep=";", index=False)
    return rows / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=list(PRESET_ROWS), default="demo")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp directory")
    args = parser.parse_args()

    spec = DatasetSpec.preset(args.preset)
    with tempfile.TemporaryDirectory(prefix="devdata-bench-", dir=args.dir) as tmp:
        out = Path(tmp)
        # Warm-up: the first Arrow conversion lazily imports pandas, which is not generation.
        generate_dataset(DatasetSpec.from_rows(1_000), out / "warm-up")
        baseline_rss = psutil.Process().memory_info().rss
        with PeakRssSampler() as sampler:
            started = time.perf_counter()
            manifest = generate_dataset(spec, out / "dataset")
            seconds = time.perf_counter() - started
        ceiling_seconds = plain_write(out / "plain.bin", manifest.bytes_written)
        pandas_rate = pandas_to_csv_rows_per_second(out / "pandas.csv")

    megabytes = manifest.bytes_written / 1e6
    generate_rate = megabytes / seconds
    ceiling_rate = megabytes / ceiling_seconds
    max_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"preset            {args.preset} ({spec.sensors} sensors, {spec.days:.1f} days)")
    print(f"rows              {manifest.rows_written:,}")
    print(f"files             {len(manifest.files):,}")
    print(f"bytes             {manifest.bytes_written:,} ({megabytes:,.1f} MB)")
    print(f"seconds           {seconds:.2f}")
    print(f"rows/s            {manifest.rows_written / seconds:,.0f}")
    print(f"MB/s              {generate_rate:,.1f}")
    print(f"peak RSS          {sampler.peak / 1e6:,.0f} MB (sampled)")
    print(f"ru_maxrss         {max_rss_kib / 1e3:,.0f} MB (process, incl. warm-up + baselines)")
    print(f"RSS growth        {(sampler.peak - baseline_rss) / 1e6:,.0f} MB over the imports")
    print(f"plain write MB/s  {ceiling_rate:,.1f} (same bytes, buffered writes of one line)")
    print(f"ratio             {generate_rate / ceiling_rate:.2f} of the plain-write ceiling")
    rows_rate = manifest.rows_written / seconds
    print(f"pandas rows/s     {pandas_rate:,.0f} (DataFrame.to_csv of 1M rows, same columns)")
    print(f"ratio             {rows_rate / pandas_rate:.1f}x pandas.to_csv")


if __name__ == "__main__":
    main()
