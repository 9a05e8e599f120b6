"""Checks of the synthetic dataset generator against what is known of the real bucket.

Everything is parsed back with pandas independently of the generator's internals, so a wrong
offset, a broken sort, a lost duplicate or a misapplied anomaly makes a test fail.
"""

from __future__ import annotations

import re
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from app.devdata import (
    ANOMALY_KINDS,
    CANONICAL_START,
    GROUND_TRUTH_NAME,
    MANIFEST_NAME,
    PRESET_ROWS,
    DataFileInfo,
    DatasetSpec,
    Manifest,
    generate_dataset,
    list_bucket_files,
    read_ground_truth,
    read_manifest_json,
)
from app.devdata.__main__ import Preset, cli

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:00(?:\+0[12]:00)?")
INDEXED_HEADER = ";timestamp;sensor_uuid;sensor_value"
PLAIN_HEADER = "timestamp;sensor_uuid;sensor_value"
FALL_BACK_2013 = pd.Timestamp("2013-10-27 01:00", tz="UTC")


@dataclass(frozen=True)
class ParsedFile:
    info: DataFileInfo
    indexed: bool
    style: str  # "offset" or "naive", as seen in the text
    frame: pd.DataFrame  # raw_timestamp, sensor_uuid, value, instant (UTC), [row_index]


@dataclass(frozen=True)
class Generated:
    manifest: Manifest
    files: list[ParsedFile]
    mapping: dict[str, str]  # sensor_name -> sensor_uuid

    def rows(self) -> pd.DataFrame:
        return pd.concat([f.frame for f in self.files], ignore_index=True)


def localize_berlin(wall: pd.Series) -> pd.Series:
    """Naive Berlin wall time -> UTC, using the row order to resolve the repeated hour.

    Rows are sorted by true time, so within the repeated hour the summer-time readings come
    before the backward jump of the wall clock and the winter-time readings after it.
    """
    ambiguous = wall.dt.tz_localize("Europe/Berlin", ambiguous="NaT", nonexistent="raise").isna()
    jumps = np.flatnonzero(np.diff(wall.to_numpy().astype("datetime64[m]").astype(np.int64)) < 0)
    if jumps.size:
        summer = np.arange(len(wall)) <= jumps[0]
    else:
        # No jump inside this file: a leading ambiguous stretch continues the previous file
        # after the jump (winter time); a trailing one precedes it (summer time).
        summer = np.full(len(wall), not bool(ambiguous.iloc[0]))
    localized = wall.dt.tz_localize("Europe/Berlin", ambiguous=summer, nonexistent="raise")
    utc: pd.Series = localized.dt.tz_convert("UTC")
    return utc


def parse_data_file(info: DataFileInfo, path: Path) -> ParsedFile:
    with path.open(encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n")
    assert header in (INDEXED_HEADER, PLAIN_HEADER), header
    indexed = header == INDEXED_HEADER
    frame = pd.read_csv(path, sep=";", dtype=str, keep_default_na=False)
    if indexed:
        frame = frame.rename(columns={frame.columns[0]: "row_index"})
        frame["row_index"] = frame["row_index"].astype(np.int64)
    raw = frame["timestamp"]
    assert raw.str.fullmatch(TIMESTAMP).all(), f"bad timestamp text in {info.key}"
    with_offset = raw.str.len() == len("2013-01-01 00:00:00+01:00")
    assert with_offset.all() or not with_offset.any(), f"mixed timestamp styles in {info.key}"
    style = "offset" if with_offset.all() else "naive"
    if style == "offset":
        instant = pd.to_datetime(raw, format="ISO8601", utc=True)
    else:
        instant = localize_berlin(pd.to_datetime(raw, format="%Y-%m-%d %H:%M:%S"))
    parsed = pd.DataFrame(
        {
            "raw_timestamp": raw,
            "sensor_uuid": frame["sensor_uuid"],
            "value_text": frame["sensor_value"],
            "value": frame["sensor_value"].astype(np.float64),
            "instant": instant.astype("datetime64[ns, UTC]"),
        }
    )
    if indexed:
        parsed["row_index"] = frame["row_index"]
    return ParsedFile(info=info, indexed=indexed, style=style, frame=parsed)


def read_mapping(bucket_dir: Path) -> dict[str, str]:
    frame = pd.read_csv(bucket_dir / "mapping.csv", sep=";", dtype=str)
    assert list(frame.columns) == ["sensor_name", "sensor_uuid"]
    return dict(zip(frame["sensor_name"], frame["sensor_uuid"], strict=True))


def generate_and_parse(spec: DatasetSpec, out_dir: Path) -> Generated:
    manifest = generate_dataset(spec, out_dir)
    files = [parse_data_file(info, manifest.bucket_dir / info.key) for info in manifest.files]
    return Generated(manifest, files, read_mapping(manifest.bucket_dir))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    return generate_and_parse(DatasetSpec.preset("tiny"), tmp_path_factory.mktemp("tiny"))


def bucket_bytes(out_dir: Path) -> dict[str, bytes]:
    return {key: path.read_bytes() for key, path in list_bucket_files(out_dir)}


# --- layout ---------------------------------------------------------------------------------


def test_bucket_content_is_separate_from_meta_files(tiny: Generated) -> None:
    manifest = tiny.manifest
    listed = list_bucket_files(manifest.out_dir)
    assert sorted(manifest.bucket_files()) == listed
    keys = [key for key, _ in listed]
    assert "mapping.csv" in keys
    assert all(k == "mapping.csv" or k.startswith("Timeseries/") for k in keys)
    data_names = [PurePosixPath(k).name for k in keys if k != "mapping.csv"]
    assert all(re.fullmatch(r"data_\d+\.csv", name) for name in data_names)
    assert (manifest.out_dir / MANIFEST_NAME).is_file()
    assert (manifest.out_dir / GROUND_TRUTH_NAME).is_file()
    assert not any(name in (MANIFEST_NAME, GROUND_TRUTH_NAME) for name in keys)


def test_data_files_spread_over_sub_directories(tiny: Generated) -> None:
    parents = {PurePosixPath(f.info.key).parent for f in tiny.files}
    assert len(parents) >= 4
    assert any(len(parent.parts) >= 3 for parent in parents), "no nested sub directory"
    assert len(tiny.files) >= 8


def test_mapping_lists_named_sensors_with_uuid4(tiny: Generated) -> None:
    names = list(tiny.mapping)
    assert names == [f"sensor_{i:05d}" for i in range(tiny.manifest.spec.sensors)]
    uuids = list(tiny.mapping.values())
    assert len(set(uuids)) == len(uuids)
    assert all(uuid.UUID(u).version == 4 and str(uuid.UUID(u)) == u for u in uuids)


def test_every_file_variant_is_present(tiny: Generated) -> None:
    seen = {(f.indexed, f.style) for f in tiny.files}
    assert seen == {(True, "offset"), (True, "naive"), (False, "offset"), (False, "naive")}
    for parsed in tiny.files:
        assert parsed.info.variant.index_column == parsed.indexed
        assert parsed.info.variant.timestamps == parsed.style
    offsets = pd.concat(
        [f.frame["raw_timestamp"].str[-6:] for f in tiny.files if f.style == "offset"]
    )
    assert set(offsets) == {"+01:00", "+02:00"}


def test_naive_file_repeats_the_fall_back_hour(tiny: Generated) -> None:
    repeated_hours = 0
    for parsed in tiny.files:
        if parsed.style != "naive":
            continue
        wall = pd.to_datetime(parsed.frame["raw_timestamp"], format="%Y-%m-%d %H:%M:%S")
        for jump in np.flatnonzero(np.diff(wall.to_numpy()) < np.timedelta64(0)):
            before, after = wall.iloc[jump], wall.iloc[jump + 1]
            # The wall clock may only go back inside the repeated 02:00-02:59 hour of the
            # last Sunday of October.
            assert before.hour == after.hour == 2, (before, after)
            assert (after.month, after.day_of_week) == (10, 6)
            assert after.day >= 25
            repeated_hours += 1
    assert repeated_hours >= 1
    # Files whose time range covers the fall-back must be naive.
    for parsed in tiny.files:
        instants = parsed.frame["instant"]
        if instants.iloc[0] <= FALL_BACK_2013 <= instants.iloc[-1]:
            assert parsed.style == "naive"


# --- rows -----------------------------------------------------------------------------------


def test_every_row_parses(tiny: Generated) -> None:
    known = set(tiny.mapping.values())
    for parsed in tiny.files:
        frame = parsed.frame
        assert len(frame) == parsed.info.rows > 0
        assert set(frame["sensor_uuid"]) <= known
        assert np.isfinite(frame["value"]).all()
        assert frame["instant"].notna().all()
        assert (frame["instant"].dt.second == 0).all()
        if parsed.indexed:
            assert frame["row_index"].tolist() == list(range(len(frame)))


def test_values_are_written_at_full_precision(tiny: Generated) -> None:
    rows = tiny.rows()
    text, value = rows["value_text"], rows["value"]
    # Python's repr is the shortest round-trip form; it uses exponents outside this range.
    comparable = (value.abs() >= 1e-4) & (value.abs() < 1e16) & (value != value.round())
    assert comparable.mean() > 0.99
    assert (text[comparable] == value[comparable].map(repr)).all()
    assert text.str.len().mean() > 15


def test_sensor_levels_include_a_heavy_negative_tail(tiny: Generated) -> None:
    medians = tiny.rows().groupby("sensor_uuid")["value"].median()
    assert (medians.abs() <= 400).sum() >= len(medians) // 2
    assert (medians < -1000).any()


def test_rows_are_sorted_by_true_time_within_and_across_files(tiny: Generated) -> None:
    for parsed in tiny.files:
        assert parsed.frame["instant"].is_monotonic_increasing, parsed.info.key
    # Leaving out the duplicated rows (checked separately), files continue one another.
    stream = pd.concat(
        [f.frame["instant"].iloc[f.info.duplicate_rows :] for f in tiny.files], ignore_index=True
    )
    assert stream.is_monotonic_increasing
    assert stream.iloc[0] == pd.Timestamp(tiny.manifest.spec.start)


def test_sensors_report_every_5_to_30_minutes(tiny: Generated) -> None:
    rows = tiny.rows().drop_duplicates(["sensor_uuid", "instant"])
    gaps = rows.sort_values("instant").groupby("sensor_uuid")["instant"].diff().dropna()
    minutes = gaps.dt.total_seconds() / 60
    assert minutes.min() >= 5
    assert minutes.max() <= 30
    # 5 + round(25 * Beta(2, 3)) has a mean of 15 minutes.
    assert 14.5 <= minutes.mean() <= 15.5


def test_sensors_are_interleaved_in_random_order_within_a_minute(tiny: Generated) -> None:
    rows = tiny.rows().drop_duplicates(["sensor_uuid", "instant"])
    sensor_number = rows["sensor_uuid"].map({u: i for i, u in enumerate(tiny.mapping.values())})
    shared = rows.assign(sensor=sensor_number).groupby("instant")["sensor"]
    orders = shared.apply(lambda s: s.is_monotonic_increasing)[shared.size() > 1]
    assert len(orders) >= 20
    # Neither always in mapping order nor always reversed.
    assert 0.2 < orders.mean() < 0.8


def test_duplicate_rows_match_the_manifest(tiny: Generated) -> None:
    manifest = tiny.manifest
    assert manifest.duplicate_rows > 0
    assert manifest.duplicate_rows == sum(f.info.duplicate_rows for f in tiny.files)
    spec = manifest.spec
    counts = [f.info.duplicate_rows for f in tiny.files if f.info.duplicate_rows]
    assert counts == [spec.duplicate_rows] * min(spec.duplicate_boundaries, len(tiny.files) - 1)
    columns = ["instant", "sensor_uuid", "value"]
    for previous, current in zip(tiny.files, tiny.files[1:], strict=False):
        count = current.info.duplicate_rows
        if count:
            head = current.frame[columns].iloc[:count].reset_index(drop=True)
            tail = previous.frame[columns].iloc[-count:].reset_index(drop=True)
            pd.testing.assert_frame_equal(head, tail)
    rows = tiny.rows()
    repeated = rows.duplicated(["sensor_uuid", "instant"], keep="first")
    assert repeated.sum() == manifest.duplicate_rows
    # The same reading always carries the same value.
    assert rows.groupby(["sensor_uuid", "instant"])["value"].nunique().max() == 1


def test_manifest_totals_match_the_files(tiny: Generated) -> None:
    manifest = tiny.manifest
    rows = tiny.rows()
    assert manifest.rows_written == len(rows)
    assert manifest.unique_rows == len(rows.drop_duplicates(["sensor_uuid", "instant"]))
    assert manifest.rows_written == manifest.unique_rows + manifest.duplicate_rows
    sizes = {key: path.stat().st_size for key, path in list_bucket_files(manifest.out_dir)}
    assert manifest.bytes_written == sum(sizes.values())
    for parsed in tiny.files:
        assert parsed.info.bytes == sizes[parsed.info.key]
        assert parsed.info.first_timestamp_utc == parsed.frame["instant"].iloc[0]
        assert parsed.info.last_timestamp_utc == parsed.frame["instant"].iloc[-1]

    on_disk = read_manifest_json(manifest.out_dir)
    assert on_disk["spec"]["seed"] == manifest.spec.seed
    assert on_disk["spec"]["rows_per_file"] == manifest.spec.rows_per_file
    totals = on_disk["totals"]
    assert totals["rows_written"] == manifest.rows_written
    assert totals["unique_rows"] == manifest.unique_rows
    assert totals["duplicate_rows"] == manifest.duplicate_rows
    assert totals["files"] == len(tiny.files)
    assert totals["bytes"] == manifest.bytes_written
    assert [f["key"] for f in on_disk["files"]] == [f.info.key for f in tiny.files]
    assert on_disk["files"][0]["variant"] == {
        "index_column": tiny.files[0].indexed,
        "timestamps": tiny.files[0].style,
    }


# --- anomalies ------------------------------------------------------------------------------


def test_ground_truth_events_are_valid(tiny: Generated) -> None:
    manifest = tiny.manifest
    events = read_ground_truth(manifest.out_dir)
    assert events == list(manifest.events)
    assert {e.kind for e in events} == set(ANOMALY_KINDS)
    rows = tiny.rows()
    run_lengths = []
    for event in events:
        assert tiny.mapping[event.sensor_name] == event.sensor_uuid
        assert manifest.spec.start <= event.start <= event.end <= manifest.spec.end
        if event.kind in ("spike", "dip"):
            own = rows[rows["sensor_uuid"] == event.sensor_uuid]
            hit = own[(own["instant"] >= event.start) & (own["instant"] <= event.end)]
            run_lengths.append(hit["instant"].nunique())
            assert 1 <= run_lengths[-1] <= 3
            assert hit["instant"].iloc[0] == event.start
            assert hit["instant"].iloc[-1] == event.end
            assert (event.magnitude > 0) == (event.kind == "spike")
    assert max(run_lengths) >= 2, "spikes/dips should span 1-3 consecutive readings"


def test_anomalies_change_exactly_the_ground_truth_readings(
    tiny: Generated, tmp_path: Path
) -> None:
    """Same seed without events: identical times and noise, so the difference is the events."""
    clean_spec = DatasetSpec.preset("tiny", events_per_kind=0)
    clean = generate_and_parse(clean_spec, tmp_path).rows()
    rows = tiny.rows()
    assert (clean["instant"] == rows["instant"]).all()
    assert (clean["sensor_uuid"] == rows["sensor_uuid"]).all()

    difference = (rows["value"] - clean["value"]).to_numpy()
    expected = np.zeros(len(rows))
    replaced = np.zeros(len(rows), dtype=bool)
    for event in tiny.manifest.events:
        own = (rows["sensor_uuid"] == event.sensor_uuid).to_numpy()
        after = own & (rows["instant"] >= event.start).to_numpy()
        inside = after & (rows["instant"] <= event.end).to_numpy()
        assert inside.any(), event
        if event.kind in ("spike", "dip", "level_shift"):
            expected[inside] += event.magnitude
        elif event.kind == "slope_change":
            elapsed_days = (rows["instant"] - event.start).dt.total_seconds() / 86400
            expected[inside] += event.magnitude * elapsed_days.to_numpy()[inside]
        elif event.kind == "flatline":
            assert (rows["value"].to_numpy()[inside] == event.magnitude).all()
            replaced |= inside
        else:  # noise_burst: noise is scaled, so values move but by no fixed amount
            assert (difference[inside] != 0).all()
            assert np.abs(difference[inside]).mean() > 0
            replaced |= inside
    kept = ~replaced
    scale = np.maximum(1.0, np.abs(rows["value"].to_numpy()))
    np.testing.assert_allclose(
        difference[kept] / scale[kept], expected[kept] / scale[kept], atol=1e-9
    )
    untouched = kept & (expected == 0)
    assert (difference[untouched] == 0).all()


# --- determinism and scale ------------------------------------------------------------------


def test_output_is_deterministic_and_independent_of_chunking(
    tiny: Generated, tmp_path: Path
) -> None:
    # 7-minute chunks: nearly every spike/dip run, duplicated file tail, file and the repeated
    # hour now straddle chunk boundaries, unlike with the default 7-day chunks.
    rechunked = generate_dataset(
        DatasetSpec.preset("tiny", chunk_days=7 / 1440), tmp_path / "rechunked"
    )
    assert bucket_bytes(rechunked.out_dir) == bucket_bytes(tiny.manifest.out_dir)
    assert rechunked.events == tiny.manifest.events

    again = generate_dataset(DatasetSpec.preset("tiny"), tmp_path / "again")
    assert bucket_bytes(again.out_dir) == bucket_bytes(tiny.manifest.out_dir)
    other_seed = DatasetSpec.preset("tiny", seed=tiny.manifest.spec.seed + 1)
    reseeded = generate_dataset(other_seed, tmp_path / "reseeded")
    assert bucket_bytes(reseeded.out_dir) != bucket_bytes(tiny.manifest.out_dir)


@pytest.mark.parametrize("rows", [3_000, 20_000, 120_000])
def test_from_rows_lands_near_the_requested_size(rows: int, tmp_path: Path) -> None:
    manifest = generate_dataset(DatasetSpec.from_rows(rows), tmp_path)
    assert abs(manifest.unique_rows - rows) <= 0.15 * rows
    assert len(manifest.files) >= 8


def test_presets_derive_the_expected_shapes() -> None:
    assert {p.value for p in Preset} == set(PRESET_ROWS)
    full = DatasetSpec.preset("full")
    assert (full.sensors, full.days, full.rows_per_file) == (500, 1095, 50_000)
    assert full.start == CANONICAL_START
    assert full.end == CANONICAL_START + timedelta(days=1095)
    for name in ("tiny", "demo", "5m"):
        spec = DatasetSpec.preset(name)
        # Too short to reach October 2013 from the canonical start: placed around the change.
        assert spec.start < FALL_BACK_2013 < spec.end, name
    assert DatasetSpec.preset("20m").start == CANONICAL_START
    assert DatasetSpec.from_rows(10_000, sensors=7).sensors == 7
    with pytest.raises(ValueError, match="timezone-aware"):
        DatasetSpec.from_rows(1000, start=CANONICAL_START.replace(tzinfo=None))


@pytest.fixture
def arrow_pool_probe() -> Iterator[pa.MemoryPool]:
    """Route Arrow allocations through a proxy pool whose peak covers only this test."""
    previous = pa.default_memory_pool()
    probe = pa.proxy_memory_pool(previous)
    pa.set_memory_pool(probe)
    try:
        yield probe
    finally:
        pa.set_memory_pool(previous)


def test_memory_stays_bounded(tmp_path: Path, arrow_pool_probe: pa.MemoryPool) -> None:
    # ~300k rows over ~10 months: the dataset spans ~45 chunks of 7 days.
    spec = DatasetSpec.from_rows(300_000, sensors=10)
    tracemalloc.start()
    try:
        manifest = generate_dataset(spec, tmp_path)
        _, python_peak = tracemalloc.get_traced_memory()  # includes NumPy buffers
    finally:
        tracemalloc.stop()
    peak = python_peak + arrow_pool_probe.max_memory()
    assert manifest.rows_written > 250_000
    assert peak < manifest.bytes_written / 5, (peak, manifest.bytes_written)


def test_progress_reports_growing_totals(tmp_path: Path) -> None:
    reports: list[tuple[int, int]] = []
    manifest = generate_dataset(
        DatasetSpec.from_rows(5_000, chunk_days=1),
        tmp_path,
        progress=lambda b, r: reports.append((b, r)),
    )
    assert len(reports) >= 5
    assert reports == sorted(reports)
    assert reports[-1] == (manifest.bytes_written, manifest.rows_written)


def test_existing_output_is_only_replaced_on_request(tmp_path: Path) -> None:
    spec = DatasetSpec.from_rows(1_000)
    generate_dataset(spec, tmp_path)
    with pytest.raises(FileExistsError):
        generate_dataset(spec, tmp_path)
    stray = tmp_path / "bucket" / "Timeseries" / "stray.csv"
    stray.write_text("x")
    generate_dataset(spec, tmp_path, overwrite=True)
    assert not stray.exists()


def test_cli_generate(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["generate", "--rows", "2000", "--out", str(tmp_path), "--seed", "7", "--quiet"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "rows/s" in result.output
    assert read_manifest_json(tmp_path)["spec"]["seed"] == 7
    assert runner.invoke(cli, args).exit_code == 1  # refuses to overwrite
    assert runner.invoke(cli, [*args, "--overwrite", "--duplicates", "0"]).exit_code == 0
    assert read_manifest_json(tmp_path)["totals"]["duplicate_rows"] == 0
