"""Checks of CSV block parsing and binary COPY encoding.

The COPY output is decoded here with ``struct``, independently of the numpy encoder, so a
wrong instant, uuid, value or tuple layout makes a test fail. Instants are compared with
values computed by hand from the Berlin DST rules of 2013.
"""

from __future__ import annotations

import math
import random
import struct
import tracemalloc
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.devdata import DatasetSpec, Manifest, generate_dataset, read_manifest_json
from app.ingest.parsing import (
    COPY_HEADER,
    COPY_TRAILER,
    MAPPING_COLUMNS,
    READINGS_COLUMNS,
    AmbiguousRule,
    FileRejected,
    LineBlocks,
    NonexistentRule,
    ParsedBlock,
    ReadingsBlockParser,
    Rejection,
    detect_layout,
)

BERLIN = ZoneInfo("Europe/Berlin")
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
SENSOR_A = "7d412996-6150-455c-be8c-5af85896f0b4"
SENSOR_B = "0b7e2c4a-34f1-4d2e-9a51-1c7f3e8d9a60"
SENSOR_C = "f0e1d2c3-b4a5-4968-8776-655443322110"
UNKNOWN_SENSOR = "11111111-2222-4333-8444-555555555555"
KNOWN = (SENSOR_A, SENSOR_B, SENSOR_C)
HEADER = "timestamp;sensor_uuid;sensor_value"


@dataclass(frozen=True)
class Reading:
    instant_us: int
    sensor_uuid: str
    value: float


@dataclass(frozen=True)
class ParsedFile:
    blocks: list[ParsedBlock]
    readings: list[Reading]

    @property
    def rejected(self) -> list[Rejection]:
        return [rejection for block in self.blocks for rejection in block.rejected]

    def total(self, counter: str) -> int:
        return sum(getattr(block, counter) for block in self.blocks)


def unix_us(text: str) -> int:
    """Unix microseconds of an ISO timestamp with offset, by exact integer arithmetic."""
    return (datetime.fromisoformat(text) - UNIX_EPOCH) // timedelta(microseconds=1)


def decode_copy_rows(data: bytes) -> list[Reading]:
    """Independent decoder of binary COPY tuples (ts timestamptz, uuid, float8)."""
    readings: list[Reading] = []
    offset = 0
    while offset < len(data):
        (field_count,) = struct.unpack_from(">h", data, offset)
        assert field_count == 3
        offset += 2
        fields: list[bytes] = []
        for expected_length in (8, 16, 8):
            (length,) = struct.unpack_from(">i", data, offset)
            assert length == expected_length
            offset += 4
            fields.append(data[offset : offset + length])
            offset += length
        (pg_micros,) = struct.unpack(">q", fields[0])
        pg_epoch_us = (PG_EPOCH - UNIX_EPOCH) // timedelta(microseconds=1)
        (value,) = struct.unpack(">d", fields[2])
        readings.append(Reading(pg_micros + pg_epoch_us, str(uuid.UUID(bytes=fields[1])), value))
    return readings


def chunks_of(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def parse_file(
    content: str | bytes,
    *,
    ambiguous: AmbiguousRule = "infer",
    nonexistent: NonexistentRule = "shift_forward",
    block_bytes: int = 1 << 20,
    chunk_bytes: int = 1 << 16,
    known: Sequence[str] = KNOWN,
) -> ParsedFile:
    """Run a whole file through LineBlocks, detect_layout and one ReadingsBlockParser."""
    data = content.encode() if isinstance(content, str) else content
    lines = LineBlocks(block_bytes)
    blocks: list[tuple[bytes, int]] = []
    for chunk in chunks_of(data, chunk_bytes):
        blocks += lines.feed(chunk)
    blocks += lines.finish()
    assert lines.header is not None
    layout = detect_layout(lines.header, READINGS_COLUMNS)
    parser = ReadingsBlockParser(
        layout, known, BERLIN, ambiguous=ambiguous, nonexistent=nonexistent
    )
    parsed = [parser.parse(block, first_line) for block, first_line in blocks]
    readings = [reading for block in parsed for reading in decode_copy_rows(block.copy_rows)]
    for block in parsed:
        assert len(block.copy_rows) == 46 * block.rows_accepted
        assert block.rows_read == (
            block.rows_accepted + block.duplicates_in_block + len(block.rejected)
        )
    return ParsedFile(parsed, readings)


def csv_text(*lines: str, header: str = HEADER, newline: str = "\n") -> str:
    return newline.join((header, *lines)) + newline


def same_float(left: float, right: float) -> bool:
    return struct.pack(">d", left) == struct.pack(">d", right)


# --- constants --------------------------------------------------------------------------------


def test_copy_framing_constants_match_the_postgresql_format() -> None:
    assert COPY_HEADER == b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
    assert len(COPY_HEADER) == 19
    assert COPY_TRAILER == b"\xff\xff"


# --- detect_layout ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "delimiter", "names", "indices"),
    [
        (b"timestamp;sensor_uuid;sensor_value", ";", None, (0, 1, 2)),
        (b";timestamp;sensor_uuid;sensor_value", ";", ("", "timestamp"), (1, 2, 3)),
        (b"sensor_value,extra,Timestamp,SENSOR_UUID", ",", None, (2, 3, 0)),
        (b'\xef\xbb\xbf"timestamp";"sensor_uuid";"sensor_value"\r', ";", None, (0, 1, 2)),
        (b" Timestamp ; 'sensor_uuid' ;sensor_value\r\n", ";", None, (0, 1, 2)),
        (b"timestamp\tsensor_uuid\tsensor_value", "\t", None, (0, 1, 2)),
    ],
)
def test_detect_layout_finds_columns_by_name(
    header: bytes, delimiter: str, names: tuple[str, ...] | None, indices: tuple[int, ...]
) -> None:
    layout = detect_layout(header, READINGS_COLUMNS)
    assert layout.delimiter == delimiter
    assert layout.indices == dict(zip(READINGS_COLUMNS, indices, strict=True))
    if names is not None:
        assert layout.column_names[: len(names)] == names


def test_detect_layout_names_the_missing_columns() -> None:
    with pytest.raises(FileRejected) as raised:
        detect_layout(b"timestamp;sensor_uuid;value", READINGS_COLUMNS)
    assert raised.value.reason == (
        "missing required column(s) sensor_value; found: timestamp, sensor_uuid, value"
    )


def test_detect_layout_reports_the_best_delimiter_when_columns_are_missing() -> None:
    with pytest.raises(FileRejected) as raised:
        detect_layout(b"name,sensor_uuid", MAPPING_COLUMNS)
    assert raised.value.reason == (
        "missing required column(s) sensor_name; found: name, sensor_uuid"
    )


def test_detect_layout_reads_the_mapping_header() -> None:
    layout = detect_layout(b"sensor_name;sensor_uuid\r", MAPPING_COLUMNS)
    assert layout.indices == {"sensor_name": 0, "sensor_uuid": 1}


@pytest.mark.parametrize("header", [b"", b"\xef\xbb\xbf", b"  \r"])
def test_detect_layout_rejects_an_empty_header(header: bytes) -> None:
    with pytest.raises(FileRejected, match="empty"):
        detect_layout(header, READINGS_COLUMNS)


def test_detect_layout_rejects_a_repeated_required_column() -> None:
    with pytest.raises(FileRejected, match="sensor_uuid appear more than once"):
        detect_layout(b"timestamp;sensor_uuid;SENSOR_UUID;sensor_value", READINGS_COLUMNS)


# --- file variants ----------------------------------------------------------------------------

EXPECTED_VARIANT_READINGS = [
    Reading(unix_us("2013-01-01T00:00:00+01:00"), SENSOR_A, 1.5),
    Reading(unix_us("2013-01-01T00:15:00+01:00"), SENSOR_B, -195.79266687297098),
]


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(
            csv_text(
                f"2013-01-01 00:00:00+01:00;{SENSOR_A};1.5",
                f"2013-01-01 00:15:00+01:00;{SENSOR_B};-195.79266687297098",
            ),
            id="offsets",
        ),
        pytest.param(
            csv_text(
                f"0;2013-01-01 00:00:00;{SENSOR_A};1.5",
                f"1;2013-01-01 00:15:00;{SENSOR_B};-195.79266687297098",
                header=";timestamp;sensor_uuid;sensor_value",
            ),
            id="index-column-naive",
        ),
        pytest.param(
            csv_text(
                f"1.5;x;{SENSOR_A};2013-01-01 00:00:00;y",
                f"-195.79266687297098;x;{SENSOR_B};2013-01-01 00:15:00;y",
                header="sensor_value;note;sensor_uuid;timestamp;other",
            ),
            id="shuffled-with-extra-columns",
        ),
        pytest.param(
            csv_text(
                f"2013-01-01 00:00:00+01:00,{SENSOR_A},1.5",
                f"2013-01-01 00:15:00+01:00,{SENSOR_B},-195.79266687297098",
                header="timestamp,sensor_uuid,sensor_value",
            ),
            id="comma",
        ),
        pytest.param(
            b"\xef\xbb\xbf"
            + csv_text(
                f"2013-01-01 00:00:00+01:00;{SENSOR_A};1.5",
                f"2013-01-01 00:15:00+01:00;{SENSOR_B};-195.79266687297098",
                newline="\r\n",
            ).encode(),
            id="bom-crlf",
        ),
        pytest.param(
            csv_text(
                f'"2013-01-01 00:00:00";"{SENSOR_A}";"1.5"',
                f'"2013-01-01 00:15:00";"{SENSOR_B}";"-195.79266687297098"',
                header='"timestamp";"sensor_uuid";"sensor_value"',
            ),
            id="quoted",
        ),
        pytest.param(
            csv_text(
                f'"a;b";2013-01-01 00:00:00;{SENSOR_A};1.5',
                f'"c ""d"" e";2013-01-01 00:15:00;{SENSOR_B};-195.79266687297098',
                header="comment;timestamp;sensor_uuid;sensor_value",
            ),
            id="quoted-delimiter-in-extra-column",
        ),
        pytest.param(
            csv_text(
                f"2012-12-31T23:00:00Z;{SENSOR_A};1.5",
                f"2013-01-01 00:15:00.000+0100;{SENSOR_B};-195.79266687297098",
            ),
            id="t-z-fraction-compact-offset",
        ),
        pytest.param(
            csv_text(
                f"2012-12-31T23:00:00.000000Z;{SENSOR_A};1.5",
                f"2013-01-01T00:15:00;{SENSOR_B};-195.79266687297098",
            ),
            id="mixed-offset-and-naive",
        ),
        pytest.param(
            csv_text(
                "",
                f"  2013-01-01 00:00:00 ;{SENSOR_A.upper()}; 1.5",
                "   ",
                f"2013-01-01 00:15:00;  {SENSOR_B} ;-195.79266687297098  ",
            ),
            id="blank-lines-and-padding",
        ),
    ],
)
def test_file_variants_parse_to_the_same_readings(content: str | bytes) -> None:
    parsed = parse_file(content)
    assert parsed.rejected == []
    assert parsed.readings == EXPECTED_VARIANT_READINGS
    assert parsed.total("rows_read") == 2


def test_fractional_seconds_are_kept_to_the_microsecond() -> None:
    parsed = parse_file(
        csv_text(
            f"2013-06-01T12:00:00.5+02:00;{SENSOR_A};1",
            f"2013-06-01 12:00:00.123456;{SENSOR_B};2",
        )
    )
    assert [reading.instant_us for reading in parsed.readings] == [
        unix_us("2013-06-01T10:00:00.500000+00:00"),
        unix_us("2013-06-01T10:00:00.123456+00:00"),
    ]


def test_naive_times_are_berlin_local_time_in_winter_and_summer() -> None:
    parsed = parse_file(
        csv_text(f"2015-12-31 23:53:00;{SENSOR_A};1", f"2015-07-01 12:00:00;{SENSOR_B};2")
    )
    assert [reading.instant_us for reading in parsed.readings] == [
        unix_us("2015-12-31T22:53:00+00:00"),
        unix_us("2015-07-01T10:00:00+00:00"),
    ]


def test_min_and_max_timestamps_cover_accepted_rows_only() -> None:
    parsed = parse_file(
        csv_text(
            f"2013-05-01 00:00:00+00:00;{UNKNOWN_SENSOR};1",
            f"2013-05-02 00:00:00+00:00;{SENSOR_A};1",
            f"2013-05-03 00:00:00+00:00;{SENSOR_A};2",
            f"2013-05-04 00:00:00+00:00;{SENSOR_A};nan",
        )
    )
    (block,) = parsed.blocks
    assert block.min_ts_us == unix_us("2013-05-02T00:00:00+00:00")
    assert block.max_ts_us == unix_us("2013-05-03T00:00:00+00:00")


def test_a_block_without_accepted_rows_has_no_time_range() -> None:
    parsed = parse_file(csv_text(f"2013-05-01 00:00:00;{UNKNOWN_SENSOR};1", ""))
    (block,) = parsed.blocks
    assert (block.min_ts_us, block.max_ts_us, block.copy_rows) == (None, None, b"")
    assert block.rows_read == 1


@pytest.mark.parametrize("block", [b"", b"\n", b"\r\n\n", b"  \n\t\n"])
def test_blocks_of_blank_lines_read_nothing(block: bytes) -> None:
    parser = ReadingsBlockParser(detect_layout(HEADER.encode(), READINGS_COLUMNS), KNOWN, BERLIN)
    parsed = parser.parse(block, 2)
    assert (parsed.rows_read, parsed.rows_accepted, parsed.rejected) == (0, 0, [])
    assert parsed.copy_rows == b""


# --- rejected rows ----------------------------------------------------------------------------

GOOD = f"2013-01-01 00:00:00;{SENSOR_A};1.0"


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        (f"2013-01-01 00:00:00;{SENSOR_A}", "expected 3 fields, got 2"),
        (f"2013-01-01 00:00:00;{SENSOR_A};1;2", "expected 3 fields, got 4"),
        (f"2013-13-01 00:00:00;{SENSOR_A};1", "unparseable timestamp '2013-13-01 00:00:00'"),
        (f"yesterday;{SENSOR_A};1", "unparseable timestamp 'yesterday'"),
        (f";{SENSOR_A};1", "unparseable timestamp ''"),
        (f"2013-01-01 00:00:00;{SENSOR_A[:-1]};1", f"malformed sensor_uuid '{SENSOR_A[:-1]}'"),
        ("2013-01-01 00:00:00;not-a-uuid;1", "malformed sensor_uuid 'not-a-uuid'"),
        ("2013-01-01 00:00:00;sensör;1", "malformed sensor_uuid 'sensör'"),
        (
            f"2013-01-01 00:00:00;{UNKNOWN_SENSOR.upper()};1",
            f"sensor_uuid {UNKNOWN_SENSOR} is not in the mapping",
        ),
        (f"2013-01-01 00:00:00;{SENSOR_A};abc", "sensor_value 'abc' is not a finite number"),
        (f"2013-01-01 00:00:00;{SENSOR_A};", "sensor_value '' is not a finite number"),
        (f"2013-01-01 00:00:00;{SENSOR_A};NaN", "sensor_value 'NaN' is not a finite number"),
        (f"2013-01-01 00:00:00;{SENSOR_A};inf", "sensor_value 'inf' is not a finite number"),
        (f"2013-01-01 00:00:00;{SENSOR_A};-inf", "sensor_value '-inf' is not a finite number"),
        (f"2013-01-01 00:00:00;{SENSOR_A};1e999", "sensor_value '1e999' is not a finite number"),
        (f"2013-01-01 00:00:00;{SENSOR_A};1_000", "sensor_value '1_000' is not a finite number"),
        (f"2013-01-01 00:00:00;{SENSOR_A};0x10", "sensor_value '0x10' is not a finite number"),
    ],
)
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_bad_row_is_rejected_with_its_line_number_and_text(
    bad_line: str, reason: str, newline: str
) -> None:
    # Blank lines before the bad row still count for its physical line number.
    content = csv_text(GOOD, "", "  ", bad_line, GOOD.replace("00:00:00", "00:05:00"), "")
    parsed = parse_file(content.replace("\n", newline))
    assert parsed.rejected == [Rejection(5, reason, bad_line)]
    assert len(parsed.readings) == 2
    assert parsed.total("rows_read") == 3


def test_several_bad_rows_in_one_block_are_reported_in_line_order() -> None:
    content = csv_text(
        GOOD,
        f"2013-01-01 00:01:00;{SENSOR_A}",
        "",
        f"2013-01-01 00:02:00;{UNKNOWN_SENSOR};1",
        f"2013-01-01 00:03:00;{SENSOR_B};2",
        f"bad;{SENSOR_B};2",
        f"2013-01-01 00:04:00;{SENSOR_B};x;y",
        f"2013-01-01 00:05:00;{SENSOR_B};-",
    )
    parsed = parse_file(content)
    assert [(rejection.line_number, rejection.reason) for rejection in parsed.rejected] == [
        (3, "expected 3 fields, got 2"),
        (5, f"sensor_uuid {UNKNOWN_SENSOR} is not in the mapping"),
        (7, "unparseable timestamp 'bad'"),
        (8, "expected 3 fields, got 4"),
        (9, "sensor_value '-' is not a finite number"),
    ]
    assert len(parsed.readings) == 2


def test_lines_with_broken_quoting_or_encoding_are_rejected_whole() -> None:
    lines = [
        f'"2013-01-01 00:01:00;{SENSOR_A};1',
        f'2013-01-01 00:02:00;{SENSOR_A};1"5"',
        f"2013-01-01 00:03:00;{SENSOR_A};1\r5",
    ]
    content = csv_text(GOOD, *lines, GOOD.replace("00:00:00", "00:05:00")).encode()
    content += f"2013-01-01 00:06:00;{SENSOR_A};\xff\n".encode("latin-1")
    parsed = parse_file(content)
    assert [(r.line_number, r.reason, r.raw_line) for r in parsed.rejected] == [
        (3, "unbalanced quotes", lines[0]),
        (4, "malformed quoting (quotes must enclose whole fields)", lines[1]),
        (5, "carriage return inside the line", lines[2]),
        (7, "line is not valid UTF-8", f"2013-01-01 00:06:00;{SENSOR_A};\ufffd"),
    ]
    assert len(parsed.readings) == 2


def test_an_unterminated_quote_does_not_swallow_the_following_lines() -> None:
    content = csv_text(f'"2013-01-01 00:00:00;{SENSOR_A};1', GOOD, GOOD.replace(":00:00", ":01:00"))
    parsed = parse_file(content)
    assert [rejection.line_number for rejection in parsed.rejected] == [2]
    assert len(parsed.readings) == 2


def test_uppercase_uuids_are_accepted_and_stored_in_lower_case() -> None:
    parsed = parse_file(
        csv_text(f"2013-01-01 00:00:00;{SENSOR_A.upper()};1"),
        known=[SENSOR_A.upper(), SENSOR_B],
    )
    assert [reading.sensor_uuid for reading in parsed.readings] == [SENSOR_A]


def test_known_uuids_must_be_well_formed() -> None:
    layout = detect_layout(HEADER.encode(), READINGS_COLUMNS)
    with pytest.raises(ValueError, match="malformed known uuid"):
        ReadingsBlockParser(layout, [SENSOR_A, "sensor-1"], BERLIN)


def test_a_layout_without_the_readings_columns_is_refused() -> None:
    layout = detect_layout(b"sensor_name;sensor_uuid", MAPPING_COLUMNS)
    with pytest.raises(ValueError, match="timestamp"):
        ReadingsBlockParser(layout, KNOWN, BERLIN)


# --- values -----------------------------------------------------------------------------------

EXACT_VALUES = [
    "-123.45678901234568",
    "1e-300",
    "0.1",
    "-0.0",
    "5e-324",
    "2.2250738585072014e-308",
    "1.7976931348623157e308",
    "+12",
    ".5",
    "7.",
    "1E+5",
    "0.30000000000000004",
    "3.14159265358979323846264338327950288419716939937510",
    "-195.79266687297098",
]


def random_value_texts(count: int) -> list[str]:
    rng = random.Random(20121231)
    texts: list[str] = []
    while len(texts) < count:
        value = struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))[0]
        if math.isfinite(value):
            texts.append(repr(value))
    return texts


@pytest.mark.parametrize("route", ["fast", "screened"])
def test_values_round_trip_exactly_like_python_float(route: str) -> None:
    texts = EXACT_VALUES + random_value_texts(2000)
    sensors = [KNOWN[i % 3] for i in range(len(texts))]
    lines = [
        f"2013-01-01 00:00:00+00:00;{sensor};{text}"
        for sensor, text in zip(sensors, texts, strict=True)
    ]
    # Distinct instants avoid duplicates; a short line pushes the block off the fast route.
    lines = [
        line.replace("00:00:00", f"{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}")
        for i, line in enumerate(lines)
    ]
    if route == "screened":
        lines.append("2013-01-02 00:00:00+00:00;short")
    parsed = parse_file(csv_text(*lines))
    assert len(parsed.readings) == len(texts)
    for reading, text in zip(parsed.readings, texts, strict=True):
        assert same_float(reading.value, float(text)), text


# --- duplicates -------------------------------------------------------------------------------


def test_repeated_readings_in_a_block_keep_the_first() -> None:
    parsed = parse_file(
        csv_text(
            f"2013-01-01 00:00:00+01:00;{SENSOR_A};1",
            f"2013-01-01 00:00:00+01:00;{SENSOR_B};2",
            f"2012-12-31 23:00:00Z;{SENSOR_A};3",  # the same instant written differently
            f"2013-01-01 00:00:00+01:00;{SENSOR_A.upper()};4",
            f"2013-01-01 00:01:00+01:00;{SENSOR_A};5",
        )
    )
    (block,) = parsed.blocks
    assert block.duplicates_in_block == 2
    assert [(reading.sensor_uuid, reading.value) for reading in parsed.readings] == [
        (SENSOR_A, 1.0),
        (SENSOR_B, 2.0),
        (SENSOR_A, 5.0),
    ]


def test_duplicates_in_different_blocks_are_left_to_the_database() -> None:
    line = f"2013-01-01 00:00:00+01:00;{SENSOR_A};1"
    parsed = parse_file(csv_text(line, line), block_bytes=len(line) + 1)
    assert len(parsed.blocks) == 2
    assert parsed.total("duplicates_in_block") == 0
    assert len(parsed.readings) == 2


# --- daylight saving time ---------------------------------------------------------------------

FALL_BACK_FILE = csv_text(
    f"2013-10-27 01:50:00;{SENSOR_A};1",
    f"2013-10-27 02:10:00;{SENSOR_B};2",
    f"2013-10-27 02:40:00;{SENSOR_A};3",
    f"2013-10-27 02:50:00;{SENSOR_B};4",
    f"2013-10-27 02:05:00;{SENSOR_A};5",
    f"2013-10-27 02:30:00;{SENSOR_B};6",
    f"2013-10-27 02:55:00;{SENSOR_A};7",
    f"2013-10-27 03:10:00;{SENSOR_B};8",
)
FALL_BACK_UTC = [
    "2013-10-26T23:50:00+00:00",
    "2013-10-27T00:10:00+00:00",
    "2013-10-27T00:40:00+00:00",
    "2013-10-27T00:50:00+00:00",
    "2013-10-27T01:05:00+00:00",
    "2013-10-27T01:30:00+00:00",
    "2013-10-27T01:55:00+00:00",
    "2013-10-27T02:10:00+00:00",
]


@pytest.mark.parametrize("block_bytes", [1 << 20, 60, 1])
def test_fall_back_hour_is_resolved_from_row_order(block_bytes: int) -> None:
    parsed = parse_file(FALL_BACK_FILE, block_bytes=block_bytes)
    assert [reading.instant_us for reading in parsed.readings] == [
        unix_us(text) for text in FALL_BACK_UTC
    ]
    assert parsed.total("dst_ambiguous_by_order") == 6
    assert parsed.total("dst_ambiguous_by_rule") == 0


def test_file_starting_inside_the_repeated_hour_before_later_hours_is_the_second_pass() -> None:
    parsed = parse_file(
        csv_text(
            f"2013-10-27 02:30:00;{SENSOR_A};1",
            f"2013-10-27 02:45:00;{SENSOR_B};2",
            f"2013-10-27 03:05:00;{SENSOR_A};3",
        )
    )
    assert [reading.instant_us for reading in parsed.readings] == [
        unix_us("2013-10-27T01:30:00+00:00"),
        unix_us("2013-10-27T01:45:00+00:00"),
        unix_us("2013-10-27T02:05:00+00:00"),
    ]
    assert parsed.total("dst_ambiguous_by_order") == 2


def test_file_starting_inside_the_repeated_hour_with_a_jump_has_both_passes() -> None:
    parsed = parse_file(
        csv_text(
            f"2013-10-27 02:30:00;{SENSOR_A};1",
            f"2013-10-27 02:50:00;{SENSOR_B};2",
            f"2013-10-27 02:10:00;{SENSOR_A};3",
        )
    )
    assert [reading.instant_us for reading in parsed.readings] == [
        unix_us("2013-10-27T00:30:00+00:00"),
        unix_us("2013-10-27T00:50:00+00:00"),
        unix_us("2013-10-27T01:10:00+00:00"),
    ]
    assert parsed.total("dst_ambiguous_by_order") == 3


def test_file_ending_inside_the_repeated_hour_after_earlier_rows_is_the_first_pass() -> None:
    parsed = parse_file(
        csv_text(f"2013-10-27 01:55:00;{SENSOR_A};1", f"2013-10-27 02:20:00;{SENSOR_B};2")
    )
    assert parsed.readings[1].instant_us == unix_us("2013-10-27T00:20:00+00:00")
    assert parsed.total("dst_ambiguous_by_order") == 1


def test_rows_order_cannot_place_fall_back_to_the_earliest_instant() -> None:
    parsed = parse_file(
        csv_text(f"2013-10-27 02:20:00;{SENSOR_A};1", f"2013-10-27 02:40:00;{SENSOR_B};2")
    )
    assert [reading.instant_us for reading in parsed.readings] == [
        unix_us("2013-10-27T00:20:00+00:00"),
        unix_us("2013-10-27T00:40:00+00:00"),
    ]
    assert parsed.total("dst_ambiguous_by_order") == 0
    assert parsed.total("dst_ambiguous_by_rule") == 2


@pytest.mark.parametrize(
    ("rule", "repeated_hour_offset"),
    [("earliest", "+02:00"), ("latest", "+01:00")],
)
def test_earliest_and_latest_rules_ignore_row_order(
    rule: AmbiguousRule, repeated_hour_offset: str
) -> None:
    parsed = parse_file(FALL_BACK_FILE, ambiguous=rule)
    repeated_walls = ["02:10", "02:40", "02:50", "02:05", "02:30", "02:55"]
    expected = [
        unix_us(FALL_BACK_UTC[0]),
        *(unix_us(f"2013-10-27T{wall}:00{repeated_hour_offset}") for wall in repeated_walls),
        unix_us(FALL_BACK_UTC[-1]),
    ]
    assert [reading.instant_us for reading in parsed.readings] == expected
    assert parsed.total("dst_ambiguous_by_rule") == 6
    assert parsed.total("dst_ambiguous_by_order") == 0


def test_reject_rule_rejects_every_row_of_the_repeated_hour() -> None:
    parsed = parse_file(FALL_BACK_FILE, ambiguous="reject")
    assert [rejection.line_number for rejection in parsed.rejected] == [3, 4, 5, 6, 7, 8]
    assert parsed.rejected[0] == Rejection(
        3,
        "ambiguous local time '2013-10-27 02:10:00' in Europe/Berlin (repeated DST hour)",
        f"2013-10-27 02:10:00;{SENSOR_B};2",
    )
    assert [reading.instant_us for reading in parsed.readings] == [
        unix_us(FALL_BACK_UTC[0]),
        unix_us(FALL_BACK_UTC[-1]),
    ]


def test_offsets_in_the_repeated_hour_need_no_resolution() -> None:
    parsed = parse_file(
        csv_text(
            f"2013-10-27 02:30:00+01:00;{SENSOR_A};1", f"2013-10-27 02:30:00+02:00;{SENSOR_B};2"
        ),
        ambiguous="reject",
    )
    assert [reading.instant_us for reading in parsed.readings] == [
        unix_us("2013-10-27T01:30:00+00:00"),
        unix_us("2013-10-27T00:30:00+00:00"),
    ]
    assert parsed.total("dst_ambiguous_by_rule") + parsed.total("dst_ambiguous_by_order") == 0


SPRING_FILE = csv_text(
    f"2013-03-31 01:59:00;{SENSOR_A};1",
    f"2013-03-31 02:30:00;{SENSOR_B};2",
    f"2013-03-31 03:00:00;{SENSOR_A};3",
)


def test_skipped_spring_hour_shifts_forward() -> None:
    parsed = parse_file(SPRING_FILE)
    assert [reading.instant_us for reading in parsed.readings] == [
        unix_us("2013-03-31T00:59:00+00:00"),
        unix_us("2013-03-31T01:30:00+00:00"),
        unix_us("2013-03-31T01:00:00+00:00"),
    ]
    assert parsed.total("dst_nonexistent_shifted") == 1
    # Same answer as zoneinfo with fold=0.
    reference = datetime(2013, 3, 31, 2, 30, tzinfo=BERLIN)
    assert parsed.readings[1].instant_us == (reference - UNIX_EPOCH) // timedelta(microseconds=1)


def test_skipped_spring_hour_can_be_rejected() -> None:
    parsed = parse_file(SPRING_FILE, nonexistent="reject")
    assert parsed.rejected == [
        Rejection(
            3,
            "nonexistent local time '2013-03-31 02:30:00' in Europe/Berlin (skipped DST hour)",
            f"2013-03-31 02:30:00;{SENSOR_B};2",
        )
    ]
    assert parsed.total("dst_nonexistent_shifted") == 0


# --- LineBlocks -------------------------------------------------------------------------------

SMALL_FILE = (
    b"\xef\xbb\xbftimestamp;sensor_uuid;sensor_value\r\na;1;2\r\n\r\nb;3;4\n\nc;5;6\r\nd;7;8"
)
SMALL_FILE_LINES = [
    (2, b"a;1;2\r"),
    (3, b"\r"),
    (4, b"b;3;4"),
    (5, b""),
    (6, b"c;5;6\r"),
    (7, b"d;7;8"),
]


def numbered_lines(blocks: list[tuple[bytes, int]]) -> list[tuple[int, bytes]]:
    result = []
    for block, first_line in blocks:
        assert block, "blocks are never empty"
        lines = block.split(b"\n")
        if block.endswith(b"\n"):
            lines.pop()
        result += [(first_line + offset, line) for offset, line in enumerate(lines)]
    return result


def run_line_blocks(chunks: list[bytes], target: int) -> tuple[LineBlocks, list[tuple[bytes, int]]]:
    lines = LineBlocks(target)
    blocks: list[tuple[bytes, int]] = []
    for chunk in chunks:
        blocks += lines.feed(chunk)
    blocks += lines.finish()
    return lines, blocks


@pytest.mark.parametrize("target", [1, 7, 16, 1 << 20])
def test_line_blocks_are_independent_of_chunk_boundaries(target: int) -> None:
    splits: list[list[bytes]] = [[SMALL_FILE[i : i + 1] for i in range(len(SMALL_FILE))]]
    splits += [[SMALL_FILE[:cut], SMALL_FILE[cut:]] for cut in range(len(SMALL_FILE) + 1)]
    for chunks in splits:
        lines, blocks = run_line_blocks(chunks, target)
        assert lines.header == b"timestamp;sensor_uuid;sensor_value"
        assert numbered_lines(blocks) == SMALL_FILE_LINES
        # Only the file's last line may lack a newline, so only the last block.
        assert all(block.endswith(b"\n") for block, _ in blocks[:-1])
        assert blocks[-1][0].endswith(b"d;7;8")


def test_line_blocks_of_an_empty_or_header_only_file() -> None:
    lines, blocks = run_line_blocks([], 16)
    assert (lines.header, blocks) == (None, [])
    lines, blocks = run_line_blocks([b"\xef\xbb", b"\xbfa;b\r"], 16)
    assert (lines.header, blocks) == (b"a;b", [])
    lines, blocks = run_line_blocks([b"a;b\n"], 16)
    assert (lines.header, blocks) == (b"a;b", [])


def test_line_blocks_keep_a_line_longer_than_the_target_whole() -> None:
    long_line = b"x" * 100
    _, blocks = run_line_blocks([b"h\nshort\n" + long_line[:30], long_line[30:] + b"\nafter\n"], 10)
    assert numbered_lines(blocks) == [(2, b"short"), (3, long_line), (4, b"after")]


def test_line_blocks_memory_stays_bounded_on_a_large_input() -> None:
    target = 256 << 10
    chunk = b"".join(
        f"2013-01-01 00:00:{i % 60:02d};{SENSOR_A};{i}.5\n".encode() for i in range(1000)
    )
    total_chunks = 1200  # ~75 MB streamed, never held at once
    line_count, largest_block, expected_first_line = 0, 0, 2
    tracemalloc.start()
    try:
        lines = LineBlocks(target)
        lines.feed(b"timestamp;sensor_uuid;sensor_value\n")
        for _ in range(total_chunks):
            for block, first_line in lines.feed(chunk):
                assert first_line == expected_first_line
                expected_first_line += block.count(b"\n")
                line_count += block.count(b"\n")
                largest_block = max(largest_block, len(block))
                del block  # a caller is done with a block before feeding more
        for block, _ in lines.finish():
            line_count += block.count(b"\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert line_count == 1000 * total_chunks
    assert largest_block <= target
    # The pending bytes (< target + chunk, with bytearray slack) plus the block handed out.
    assert peak < 2.5 * target + 2 * len(chunk), peak


# --- the generated demo dataset ---------------------------------------------------------------


@dataclass(frozen=True)
class Demo:
    manifest: Manifest
    known: list[str]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    out_dir = tmp_path_factory.mktemp("demo")
    manifest = generate_dataset(DatasetSpec.preset("demo"), out_dir)
    mapping = (manifest.bucket_dir / "mapping.csv").read_text().splitlines()
    layout = detect_layout(mapping[0].encode(), MAPPING_COLUMNS)
    column = layout.indices["sensor_uuid"]
    known = [line.split(layout.delimiter)[column] for line in mapping[1:] if line]
    return Demo(manifest, known)


def test_whole_demo_dataset_parses_without_rejections(demo: Demo) -> None:
    manifest = demo.manifest
    totals = read_manifest_json(manifest.out_dir)["totals"]
    accepted = 0
    by_order = 0
    first_instant, last_instant = None, None
    for info in manifest.files:
        data = (manifest.bucket_dir / info.key).read_bytes()
        # Small blocks so the repeated hour's state has to cross block boundaries.
        parsed = parse_file(data, known=demo.known, block_bytes=64 << 10, chunk_bytes=10_000)
        assert parsed.rejected == [], info.key
        assert parsed.total("duplicates_in_block") == 0
        assert parsed.total("dst_ambiguous_by_rule") == 0
        by_order += parsed.total("dst_ambiguous_by_order")
        accepted += parsed.total("rows_accepted")

        rows = [line.split(";") for line in data.decode().splitlines()[1:]]
        assert len(parsed.readings) == len(rows) == info.rows
        instants = [reading.instant_us for reading in parsed.readings]
        # Files are sorted by true time, so a wrongly resolved DST hour breaks the order.
        assert instants == sorted(instants), info.key
        for reading, fields in zip(parsed.readings, rows, strict=True):
            timestamp, sensor, value = fields[-3:]
            moment = UNIX_EPOCH + timedelta(microseconds=reading.instant_us)
            if info.variant.timestamps == "offset":
                assert reading.instant_us == unix_us(timestamp)
            else:
                assert moment.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M:%S") == timestamp
            assert reading.sensor_uuid == sensor
            assert same_float(reading.value, float(value))
        assert instants[0] == unix_us(info.first_timestamp_utc.isoformat())
        assert instants[-1] == unix_us(info.last_timestamp_utc.isoformat())
        block_minimum = min(b.min_ts_us for b in parsed.blocks if b.min_ts_us is not None)
        block_maximum = max(b.max_ts_us for b in parsed.blocks if b.max_ts_us is not None)
        assert (block_minimum, block_maximum) == (instants[0], instants[-1])
        first_instant = min(first_instant or instants[0], instants[0])
        last_instant = max(last_instant or instants[-1], instants[-1])

    assert accepted == manifest.rows_written == totals["rows_written"]
    # The demo preset has one naive file spanning the 2013 fall-back.
    assert by_order > 0
    assert first_instant == unix_us(totals["first_timestamp_utc"].replace("Z", "+00:00"))
    assert last_instant == unix_us(totals["last_timestamp_utc"].replace("Z", "+00:00"))


def test_group_by_sensor_orders_tuples_by_sensor_then_time_without_changing_them() -> None:
    content = "\n".join(
        [
            HEADER,
            f"2013-01-01 00:10:00+00:00;{SENSOR_B};1",
            f"2013-01-01 00:05:00+00:00;{SENSOR_A};2",
            f"2013-01-01 00:00:00+00:00;{SENSOR_B};3",
            f"2013-01-01 00:20:00+00:00;{SENSOR_A};4",
        ]
    ).encode()
    layout = detect_layout(HEADER.encode(), ("timestamp", "sensor_uuid", "sensor_value"))
    in_file_order = ReadingsBlockParser(layout, KNOWN, ZoneInfo("Europe/Berlin"))
    grouped = ReadingsBlockParser(layout, KNOWN, ZoneInfo("Europe/Berlin"), group_by_sensor=True)
    body = content.split(b"\n", 1)[1]
    plain = decode_copy_rows(in_file_order.parse(body, 2).copy_rows)
    ordered = decode_copy_rows(grouped.parse(body, 2).copy_rows)
    assert [r.value for r in plain] == [1, 2, 3, 4]
    assert sorted(plain, key=lambda r: (r.sensor_uuid, r.instant_us)) != plain
    assert ordered == sorted(plain, key=lambda r: (KNOWN_ORDER[r.sensor_uuid], r.instant_us))


KNOWN_ORDER = {known: index for index, known in enumerate(sorted(KNOWN))}


def test_by_sensor_summarises_exactly_the_accepted_rows() -> None:
    content = "\n".join(
        [
            HEADER,
            f"2013-01-01 00:10:00+00:00;{SENSOR_B};1",
            f"2013-01-01 00:05:00+00:00;{SENSOR_A};2",
            f"2013-01-01 00:00:00+00:00;{SENSOR_B};3",
            f"2013-01-01 00:20:00+00:00;{SENSOR_A};x",  # rejected: not counted
            f"2013-01-01 00:05:00+00:00;{SENSOR_A};9",  # repeat: not counted
            f"2013-01-01 00:30:00+00:00;{SENSOR_A};4",
        ]
    )
    parsed = parse_file(content)
    (block,) = parsed.blocks
    expected: dict[str, tuple[int, int, int]] = {}
    for reading in parsed.readings:
        count, first, last = expected.get(reading.sensor_uuid, (0, reading.instant_us, 0))
        expected[reading.sensor_uuid] = (
            count + 1,
            min(first, reading.instant_us),
            max(last, reading.instant_us),
        )
    summaries = {str(s.sensor_uuid): (s.count, s.first_us, s.last_us) for s in block.by_sensor}
    assert summaries == expected
    assert summaries[SENSOR_A] == (
        2,
        unix_us("2013-01-01T00:05:00+00:00"),
        unix_us("2013-01-01T00:30:00+00:00"),
    )
