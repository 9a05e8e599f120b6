"""Turn raw sensor CSV bytes into PostgreSQL binary COPY tuples.

Per file: :class:`LineBlocks` cuts the decompressed byte stream into blocks of whole lines and
keeps the header apart, :func:`detect_layout` reads the header, and one
:class:`ReadingsBlockParser` turns each block into COPY tuples plus per-row rejections.

Everything per row is vectorised (Arrow's CSV reader and compute kernels, numpy, pandas), so
a block is parsed mostly outside the GIL. Python loops only visit rejected rows, the rows of a
repeated or skipped DST hour, and the distinct repeated hours of a block.

A block takes one of two routes:

* fast: no quotes, no stray carriage returns, valid UTF-8. Arrow reads the block as it is,
  with the value column parsed straight to float64. Arrow skips empty lines itself, so row
  ``i`` is the ``i``-th non-empty line.
* screened: anything else, or the fast read failed (wrong field count, text in the value
  column). Lines are checked with numpy first (blank, field count, quoting, UTF-8), the bad
  ones are rejected and cut out, and Arrow reads the remainder with all columns as text.
"""

from __future__ import annotations

import csv
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

AmbiguousRule = Literal["infer", "earliest", "latest", "reject"]
NonexistentRule = Literal["shift_forward", "reject"]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

UTF8_BOM: Final = b"\xef\xbb\xbf"
READINGS_COLUMNS: Final = ("timestamp", "sensor_uuid", "sensor_value")
MAPPING_COLUMNS: Final = ("sensor_name", "sensor_uuid")

# PostgreSQL binary COPY framing: signature, int32 flags, int32 header extension length.
COPY_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
COPY_TRAILER: Final = b"\xff\xff"

# One COPY tuple (ts timestamptz, sensor_uuid uuid, value float8). Packed, big-endian, so a
# block of tuples is a single numpy buffer: no per-row struct.pack.
COPY_TUPLE: Final = np.dtype(
    [
        ("field_count", ">i2"),
        ("ts_length", ">i4"),
        ("ts", ">i8"),
        ("uuid_length", ">i4"),
        ("uuid", "u1", (16,)),
        ("value_length", ">i4"),
        ("value", ">f8"),
    ]
)
PG_EPOCH_US: Final = 946_684_800 * 1_000_000  # 2000-01-01T00:00:00Z in Unix microseconds
_US_PER_SECOND: Final = 1_000_000
_US_PER_DAY: Final = 86_400 * _US_PER_SECOND
NAT: Final = np.iinfo(np.int64).min  # pandas' NaT as int64

# Plain decimal notation. Arrow's float parser alone would also take "inf" and "nan", which
# are rejected anyway, and rounds exactly like Python's float().
_DECIMAL_PATTERN: Final = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
UUID_PATTERN: Final = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# Only a hint for which cast to try first on a block with mixed timestamp styles: Arrow's
# ISO 8601 cast itself decides what is valid (an offset needs a tz-aware target type).
ENDS_WITH_OFFSET: Final = r":\d\d(?:\.\d*)?(?:Z|[+-]\d\d(?::?\d\d)?)$"
_OFFSET_SUFFIX: Final = re.compile(ENDS_WITH_OFFSET)
UTC_MICROS: Final = pa.timestamp("us", tz="UTC")
NAIVE_MICROS: Final = pa.timestamp("us")

_DELIMITER_CANDIDATES: Final = (";", ",", "\t")
_NEWLINE: Final = ord("\n")
_CARRIAGE_RETURN: Final = ord("\r")
_QUOTE: Final = ord('"')
_SPACE: Final = ord(" ")
_TAB: Final = ord("\t")

# Reject reasons per row, in priority order: the first that applies is reported.
_OK: Final = 0
_BAD_TIMESTAMP: Final = 1
_AMBIGUOUS: Final = 2
_NONEXISTENT: Final = 3
_MALFORMED_UUID: Final = 4
_UNKNOWN_UUID: Final = 5
_BAD_VALUE: Final = 6


class FileRejected(Exception):
    """The whole file is unusable, for example a required column is missing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvLayout:
    delimiter: str
    column_names: tuple[str, ...]  # normalised: stripped, unquoted, lower case
    indices: dict[str, int]  # required column name -> position


def detect_layout(header_line: bytes, required: Sequence[str]) -> CsvLayout:
    """Find the delimiter and the position of each required column from the header line.

    Names match case-insensitively, ignoring surrounding whitespace and quotes; extra columns
    are allowed. Raises FileRejected naming the missing columns when no delimiter works.
    """
    text = header_line.removeprefix(UTF8_BOM).rstrip(b"\r\n").decode("utf-8", errors="replace")
    if not text.strip():
        raise FileRejected("the header line is empty")
    wanted = [_normalise_column_name(name) for name in required]
    closest: tuple[tuple[int, int], list[str], tuple[str, ...]] | None = None
    for delimiter in _DELIMITER_CANDIDATES:
        names = _split_header(text, delimiter)
        missing = [name for name in wanted if name not in names]
        if not missing:
            repeated = sorted({name for name in wanted if names.count(name) > 1})
            if repeated:
                raise FileRejected(f"column(s) {', '.join(repeated)} appear more than once")
            return CsvLayout(
                delimiter=delimiter,
                column_names=names,
                indices={name: names.index(name) for name in wanted},
            )
        # For the message, report the reading that found the most of what we need.
        rank = (len(wanted) - len(missing), len(names))
        if closest is None or rank > closest[0]:
            closest = (rank, missing, names)
    assert closest is not None
    _, missing, names = closest
    found = ", ".join(name or "(unnamed)" for name in names)
    raise FileRejected(f"missing required column(s) {', '.join(missing)}; found: {found}")


def _split_header(text: str, delimiter: str) -> tuple[str, ...]:
    try:
        cells = next(csv.reader([text], delimiter=delimiter, quotechar='"'))
    except csv.Error as error:
        raise FileRejected(f"unreadable header line: {error}") from None
    return tuple(_normalise_column_name(cell) for cell in cells)


def _normalise_column_name(name: str) -> str:
    return name.strip().strip("\"'").strip().lower()


# --------------------------------------------------------------------------------------------
# Byte stream -> blocks of whole lines
# --------------------------------------------------------------------------------------------


class LineBlocks:
    """Feed raw byte chunks (any sizes, arbitrary split points); get back blocks of COMPLETE lines.

    Each block comes with the 1-based physical line number of its first line (the header is
    line 1 and is kept in ``header``, never in a block). Blocks are cut at the last newline
    before ``target_block_bytes``, so memory stays bounded whatever the file size: about the
    pending bytes (< target + the chunk being fed) plus the block handed out, or one whole
    line when a line is longer than the target.
    """

    def __init__(self, target_block_bytes: int = 8 << 20) -> None:
        if target_block_bytes < 1:
            raise ValueError("target_block_bytes must be positive")
        self.header: bytes | None = None
        self._target = target_block_bytes
        self._pending = bytearray()
        self._next_line_number = 1
        # Bytes of _pending already known to hold no newline, so a very long line is not
        # rescanned from its start on every feed.
        self._scanned = 0

    def feed(self, chunk: bytes) -> list[tuple[bytes, int]]:
        self._pending += chunk
        if self.header is None and not self._take_header(at_end=False):
            return []
        return self._cut_blocks(at_end=False)

    def finish(self) -> list[tuple[bytes, int]]:
        """The remainder; a last line without a trailing newline still counts."""
        if self.header is None:
            self._take_header(at_end=True)
        return self._cut_blocks(at_end=True)

    def _take_header(self, *, at_end: bool) -> bool:
        newline = self._pending.find(b"\n", self._scanned)
        if newline < 0:
            self._scanned = len(self._pending)
            if not (at_end and self._pending):
                return False
            newline = len(self._pending)
        with memoryview(self._pending) as view:
            line = bytes(view[:newline])
        self.header = line.removeprefix(UTF8_BOM).rstrip(b"\r")
        del self._pending[: newline + 1]
        self._next_line_number = 2
        self._scanned = 0
        return True

    def _cut_blocks(self, *, at_end: bool) -> list[tuple[bytes, int]]:
        pending = self._pending
        blocks: list[tuple[bytes, int]] = []
        start = 0
        # Copy blocks out through a view: slicing the bytearray would copy each block twice.
        with memoryview(pending) as view:
            while len(pending) - start >= self._target:
                cut = pending.rfind(b"\n", start, start + self._target)
                if cut < 0:
                    # A single line longer than the target: the block is that whole line.
                    cut = pending.find(b"\n", max(start + self._target, self._scanned))
                    if cut < 0:
                        self._scanned = len(pending)
                        break
                blocks.append(self._numbered(bytes(view[start : cut + 1])))
                start = cut + 1
            if at_end and start < len(pending):
                blocks.append(self._numbered(bytes(view[start:])))
                start = len(pending)
        if start:
            del pending[:start]
            self._scanned = max(0, self._scanned - start)
        return blocks

    def _numbered(self, block: bytes) -> tuple[bytes, int]:
        first_line_number = self._next_line_number
        self._next_line_number += block.count(b"\n")
        return block, first_line_number


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    line_number: int
    reason: str
    raw_line: str


@dataclass(frozen=True)
class SensorSummary:
    """The accepted rows of one sensor in a block: how many, and the first and last."""

    sensor_uuid: uuid.UUID
    count: int
    first_us: int  # Unix microseconds (UTC)
    last_us: int


@dataclass
class ParsedBlock:
    copy_rows: bytes  # binary COPY tuples, no file header or trailer
    rows_accepted: int
    rows_read: int  # non-blank data lines in the block
    duplicates_in_block: int  # repeats of an earlier (uuid, instant) of the block, dropped
    rejected: list[Rejection]
    min_ts_us: int | None  # Unix microseconds (UTC) of accepted rows
    max_ts_us: int | None
    by_sensor: list[SensorSummary]  # accepted rows per sensor (for the sensor summary table)
    dst_ambiguous_by_order: int
    dst_ambiguous_by_rule: int
    dst_nonexistent_shifted: int


def encode_copy_tuples(instants: IntArray, uuid_bytes: npt.NDArray[np.uint8], values: Any) -> bytes:
    """Binary COPY tuples (no header or trailer) of Unix-microsecond instants, 16-byte
    uuids (one row each) and float values."""
    tuples = np.empty(instants.size, dtype=COPY_TUPLE)
    tuples["field_count"] = 3
    tuples["ts_length"] = 8
    tuples["ts"] = instants - PG_EPOCH_US
    tuples["uuid_length"] = 16
    tuples["uuid"] = uuid_bytes
    tuples["value_length"] = 8
    tuples["value"] = values
    return tuples.tobytes()


# --------------------------------------------------------------------------------------------
# Block parser
# --------------------------------------------------------------------------------------------


class ReadingsBlockParser:
    """Parse blocks of one readings file into COPY tuples (ts timestamptz, uuid, float8).

    Use one instance per file and feed its blocks in order: resolving the repeated autumn
    hour by row order carries state from one block to the next.
    """

    def __init__(
        self,
        layout: CsvLayout,
        known_uuids: Sequence[str],
        zone: ZoneInfo,
        *,
        ambiguous: AmbiguousRule = "infer",
        nonexistent: NonexistentRule = "shift_forward",
        group_by_sensor: bool = False,
    ) -> None:
        """`group_by_sensor` orders the COPY tuples by (sensor, time) instead of file order."""
        missing = [name for name in READINGS_COLUMNS if name not in layout.indices]
        if missing:
            raise ValueError(f"layout lacks required column(s) {', '.join(missing)}")
        self._layout = layout
        self._zone = zone
        self._ambiguous_rule: AmbiguousRule = ambiguous
        self._nonexistent_rule: NonexistentRule = nonexistent
        self._expected_fields = len(layout.column_names)
        # Positional names: the file's own names may be empty or repeated (index column).
        self._arrow_names = [f"column_{i}" for i in range(self._expected_fields)]
        self._timestamp_column = self._arrow_names[layout.indices["timestamp"]]
        self._uuid_column = self._arrow_names[layout.indices["sensor_uuid"]]
        self._value_column = self._arrow_names[layout.indices["sensor_value"]]

        normalised = sorted({known.strip().lower() for known in known_uuids})
        self._known_uuids = pa.array(normalised, pa.string())
        canonical = arrow_to_bool(pc.match_substring_regex(self._known_uuids, UUID_PATTERN))
        if not canonical.all():
            malformed = [normalised[i] for i in np.flatnonzero(~canonical)[:5].tolist()]
            raise ValueError(f"malformed known uuid(s): {', '.join(malformed)}")
        self._uuid_bytes: npt.NDArray[np.uint8] = np.frombuffer(
            bytes.fromhex("".join(normalised).replace("-", "")), dtype=np.uint8
        ).reshape(-1, 16)
        self._repeated_hours = _RepeatedHourOrder(zone)
        self._group_by_sensor = group_by_sensor

    def parse(self, block: bytes, first_line_number: int) -> ParsedBlock:
        lines = _BlockLines(block, first_line_number)
        rows = self._read_fast(block) or self._read_screened(block, lines)
        count = rows.count
        codes = np.zeros(count, dtype=np.uint8)

        timestamps = self._parse_timestamps(rows.timestamps)
        _flag(codes, timestamps.unparseable, _BAD_TIMESTAMP)
        dst = self._localize(timestamps)
        _flag(codes, dst.rejected_ambiguous, _AMBIGUOUS)
        _flag(codes, dst.rejected_nonexistent, _NONEXISTENT)

        uuid_index, malformed_uuid, unknown_uuid = self._match_uuids(rows.uuids)
        _flag(codes, malformed_uuid, _MALFORMED_UUID)
        _flag(codes, unknown_uuid, _UNKNOWN_UUID)

        values = _parse_values(rows.values)
        _flag(codes, ~np.isfinite(values), _BAD_VALUE)

        accepted = np.flatnonzero(codes == _OK)
        instants = timestamps.instants[accepted]
        sensors = uuid_index[accepted]
        repeated = _later_repeats(instants, sensors, len(self._uuid_bytes))
        if repeated.any():
            accepted, instants, sensors = (
                accepted[~repeated],
                instants[~repeated],
                sensors[~repeated],
            )

        rejected = rows.line_rejections + self._row_rejections(rows, lines, codes)
        rejected.sort(key=lambda rejection: rejection.line_number)
        return ParsedBlock(
            copy_rows=self._encode(instants, sensors, values[accepted]),
            rows_accepted=int(accepted.size),
            rows_read=count + len(rows.line_rejections),
            duplicates_in_block=int(repeated.sum()),
            rejected=rejected,
            min_ts_us=int(instants.min()) if instants.size else None,
            max_ts_us=int(instants.max()) if instants.size else None,
            by_sensor=self._summarise(instants, sensors),
            dst_ambiguous_by_order=dst.by_order,
            dst_ambiguous_by_rule=dst.by_rule,
            dst_nonexistent_shifted=dst.shifted,
        )

    # -- reading ------------------------------------------------------------------------------

    def _read_fast(self, block: bytes) -> _CsvRows | None:
        if b'"' in block or _has_stray_carriage_return(block) or not _is_utf8(block):
            return None
        try:
            table = self._read_csv(block, quoted=False, value_type=pa.float64())
        except pa.ArrowInvalid:
            return None  # wrong field count or a non-numeric value somewhere: screen lines
        return self._rows_of(table, row_lines=None, line_rejections=[])

    def _read_screened(self, block: bytes, lines: _BlockLines) -> _CsvRows:
        screened = _screen_lines(block, lines, self._layout.delimiter, self._expected_fields)
        kept = screened.kept
        if kept.size == np.count_nonzero(lines.ends > lines.starts):
            buffer = block  # only empty lines are dropped, and Arrow skips those itself
        else:
            buffer = _join_lines(block, lines, kept)
        misread: list[tuple[int, int]] = []  # (row number, fields) as Arrow counted them

        def skip_invalid_row(row: Any) -> str:
            misread.append((int(row.number), int(row.actual_columns)))
            return "skip"

        table = self._read_csv(
            buffer,
            quoted=screened.has_quotes,
            value_type=pa.string(),
            invalid_row_handler=skip_invalid_row,
        )
        line_rejections = screened.rejections
        if misread:
            # Screening mirrors Arrow's quoting rules, so this is a safety net only. Arrow
            # numbers the non-empty rows it saw from 1, and every row it saw was kept.
            misread_rows = np.array([number - 1 for number, _ in misread], dtype=np.int64)
            line_rejections += [
                lines.rejection(int(kept[row]), _field_count_reason(self._expected_fields, fields))
                for row, (_, fields) in zip(misread_rows, misread, strict=True)
            ]
            kept = np.delete(kept, misread_rows)
        if table.num_rows != kept.size:
            raise FileRejected(
                f"lines {lines.number(int(kept[0])) if kept.size else '?'} and following could"
                " not be split into rows reliably (inconsistent quoting)"
            )
        return self._rows_of(table, row_lines=kept, line_rejections=line_rejections)

    def _read_csv(
        self, buffer: bytes, *, quoted: bool, value_type: Any, invalid_row_handler: Any = None
    ) -> Any:
        if not buffer:
            # Arrow refuses an empty input instead of returning no rows.
            buffer = b"\n"
        return pa_csv.read_csv(
            pa.py_buffer(buffer),
            read_options=pa_csv.ReadOptions(
                column_names=self._arrow_names,
                # One Arrow block per parser block: a single chunk per column, and the
                # worker thread this runs in is the unit of parallelism.
                block_size=max(len(buffer), 1 << 16) + 1,
                use_threads=False,
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=self._layout.delimiter,
                quote_char='"' if quoted else False,
                ignore_empty_lines=True,
                invalid_row_handler=invalid_row_handler,
            ),
            convert_options=pa_csv.ConvertOptions(
                include_columns=[self._timestamp_column, self._uuid_column, self._value_column],
                column_types={
                    self._timestamp_column: pa.string(),
                    self._uuid_column: pa.string(),
                    self._value_column: value_type,
                },
                # Only an empty value is null; "NaN" etc. are parsed and then rejected.
                null_values=[""],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                # Screening or the fast-route check already validated UTF-8.
                check_utf8=False,
            ),
        )

    def _rows_of(
        self, table: Any, *, row_lines: IntArray | None, line_rejections: list[Rejection]
    ) -> _CsvRows:
        return _CsvRows(
            timestamps=_single_array(table.column(self._timestamp_column)),
            uuids=_single_array(table.column(self._uuid_column)),
            values=_single_array(table.column(self._value_column)),
            row_lines=row_lines,
            line_rejections=line_rejections,
        )

    # -- columns ------------------------------------------------------------------------------

    def _parse_timestamps(self, texts: Any) -> _Timestamps:
        count = len(texts)
        # Files are homogeneous, so the first row tells which cast parses the whole block.
        # A failing cast costs ~1 us per element it cannot parse (ten times a good one), so
        # on failure the slow route splits the rows instead of trying the other style on all.
        naive = not (count and _OFFSET_SUFFIX.search(texts[0].as_py().strip()))
        try:
            micros = _to_int64(pc.cast(texts, NAIVE_MICROS if naive else UTC_MICROS))
        except pa.ArrowInvalid:
            return _parse_mixed_timestamps(texts)
        return _Timestamps(
            instants=np.zeros(count, np.int64) if naive else micros.copy(),
            walls=micros if naive else np.zeros(count, np.int64),
            naive=np.full(count, naive),
            unparseable=np.zeros(count, np.bool_),
        )

    def _localize(self, timestamps: _Timestamps) -> _DstOutcome:
        """Turn naive wall times into instants in ``zone``; ambiguous/nonexistent per the rules."""
        outcome = _DstOutcome.none(len(timestamps.naive))
        naive_rows = np.flatnonzero(timestamps.naive & ~timestamps.unparseable)
        if naive_rows.size == 0:
            return outcome
        walls = timestamps.walls[naive_rows]
        instants = _localize_walls(walls, self._zone, ambiguous="NaT")
        timestamps.instants[naive_rows] = instants
        unresolved = np.flatnonzero(instants == NAT)
        ambiguous = np.zeros(naive_rows.size, np.bool_)
        if unresolved.size:
            # Localising both ways tells the repeated hour (two answers) from the skipped
            # one (none), and gives both candidate instants of every repeated wall time.
            as_summer = _localize_walls(walls[unresolved], self._zone, ambiguous=True)
            as_winter = _localize_walls(walls[unresolved], self._zone, ambiguous=False)
            repeated = (as_summer != NAT) & (as_winter != NAT)
            ambiguous[unresolved[repeated]] = True
            self._resolve_repeated(
                outcome,
                timestamps,
                naive_rows,
                ambiguous,
                np.minimum(as_summer, as_winter)[repeated],
                np.maximum(as_summer, as_winter)[repeated],
            )
            skipped = unresolved[~repeated]
            self._resolve_skipped(outcome, timestamps, naive_rows[skipped], walls[skipped])
        if self._ambiguous_rule == "infer":
            self._repeated_hours.note_plain_rows(walls[~ambiguous])
        return outcome

    def _resolve_repeated(
        self,
        outcome: _DstOutcome,
        timestamps: _Timestamps,
        naive_rows: IntArray,
        ambiguous: BoolArray,
        earliest: IntArray,
        latest: IntArray,
    ) -> None:
        rows = naive_rows[ambiguous]
        if rows.size == 0:
            return
        if self._ambiguous_rule == "reject":
            outcome.rejected_ambiguous[rows] = True
            return
        if self._ambiguous_rule == "infer":
            walls = timestamps.walls[naive_rows]
            second_pass, by_order = self._repeated_hours.resolve(walls, ambiguous, earliest, latest)
        else:
            second_pass = np.full(rows.size, self._ambiguous_rule == "latest")
            by_order = np.zeros(rows.size, np.bool_)
        timestamps.instants[rows] = np.where(second_pass, latest, earliest)
        outcome.by_order += int(by_order.sum())
        outcome.by_rule += int(rows.size - by_order.sum())

    def _resolve_skipped(
        self, outcome: _DstOutcome, timestamps: _Timestamps, rows: IntArray, walls: IntArray
    ) -> None:
        if rows.size == 0:
            return
        if self._nonexistent_rule == "reject":
            outcome.rejected_nonexistent[rows] = True
            return
        # Like zoneinfo with fold=0: read the wall time with the offset in force before the
        # gap. That offset is the one of the last instant before the gap.
        before_gap = pd.DatetimeIndex(walls.view("datetime64[us]")).tz_localize(
            self._zone, ambiguous="raise", nonexistent="shift_backward"
        )
        offset_before = (
            before_gap.tz_convert(self._zone).tz_localize(None).as_unit("us").asi8
            - before_gap.as_unit("us").asi8
        )
        timestamps.instants[rows] = walls - offset_before
        outcome.shifted += int(rows.size)

    def _match_uuids(self, texts: Any) -> tuple[IntArray, BoolArray, BoolArray]:
        """Index into the known uuids per row, plus malformed and unknown masks."""
        count = len(texts)
        found = pc.index_in(texts, value_set=self._known_uuids)
        malformed = np.zeros(count, np.bool_)
        unknown = np.zeros(count, np.bool_)
        if found.null_count == 0:
            return _to_int64(found), malformed, unknown
        # Rare rows (other case, whitespace, garbage): normalise once per distinct text.
        missing = np.flatnonzero(arrow_to_bool(found.is_null()))
        distinct = pc.dictionary_encode(texts.take(pa.array(missing)))
        normalised = pc.utf8_lower(pc.utf8_trim_whitespace(distinct.dictionary))
        well_formed = arrow_to_bool(pc.match_substring_regex(normalised, UUID_PATTERN))
        refound = pc.index_in(normalised, value_set=self._known_uuids)
        per_distinct = _to_int64(pc.fill_null(refound, -1))
        codes = _to_int64(distinct.indices)
        index = _to_int64(pc.fill_null(found, 0)).copy()
        index[missing] = np.maximum(per_distinct[codes], 0)
        malformed[missing] = ~well_formed[codes]
        unknown[missing] = well_formed[codes] & (per_distinct[codes] < 0)
        return index, malformed, unknown

    # -- output -------------------------------------------------------------------------------

    def _summarise(self, instants: IntArray, sensors: IntArray) -> list[SensorSummary]:
        present, inverse, counts = np.unique(sensors, return_inverse=True, return_counts=True)
        first = np.full(present.size, np.iinfo(np.int64).max)
        last = np.full(present.size, np.iinfo(np.int64).min)
        np.minimum.at(first, inverse, instants)
        np.maximum.at(last, inverse, instants)
        return [
            SensorSummary(uuid.UUID(bytes=self._uuid_bytes[sensor].tobytes()), n, lo, hi)
            for sensor, n, lo, hi in zip(
                present.tolist(), counts.tolist(), first.tolist(), last.tolist(), strict=True
            )
        ]

    def _encode(self, instants: IntArray, sensors: IntArray, values: Any) -> bytes:
        if self._group_by_sensor:
            # Consecutive rows then land on the same leaf page of the (sensor_uuid, ts)
            # index instead of hopping between every sensor's page, which makes
            # PostgreSQL's side of the COPY measurably cheaper (bench/ingest.py).
            order = np.lexsort((instants, sensors))
            instants, sensors, values = instants[order], sensors[order], np.asarray(values)[order]
        return encode_copy_tuples(instants, self._uuid_bytes[sensors], values)

    def _row_rejections(
        self, rows: _CsvRows, lines: _BlockLines, codes: npt.NDArray[np.uint8]
    ) -> list[Rejection]:
        rejected_rows = np.flatnonzero(codes != _OK)
        if rejected_rows.size == 0:
            return []
        line_of_row = rows.row_lines if rows.row_lines is not None else lines.non_empty()
        rejections: list[Rejection] = []
        for row in rejected_rows.tolist():
            line = int(line_of_row[row])
            fields = self._fields_of(lines.text(line))
            rejections.append(lines.rejection(line, self._row_reason(int(codes[row]), fields)))
        return rejections

    def _fields_of(self, raw_line: str) -> list[str]:
        try:
            return next(csv.reader([raw_line], delimiter=self._layout.delimiter, quotechar='"'))
        except (csv.Error, StopIteration):
            return []

    def _row_reason(self, code: int, fields: list[str]) -> str:
        def cell(column: str) -> str:
            position = self._layout.indices[column]
            return fields[position] if position < len(fields) else ""

        timestamp = cell("timestamp")
        if code == _BAD_TIMESTAMP:
            return f"unparseable timestamp '{timestamp}'"
        if code == _AMBIGUOUS:
            return f"ambiguous local time '{timestamp}' in {self._zone} (repeated DST hour)"
        if code == _NONEXISTENT:
            return f"nonexistent local time '{timestamp}' in {self._zone} (skipped DST hour)"
        if code == _MALFORMED_UUID:
            return f"malformed sensor_uuid '{cell('sensor_uuid')}'"
        if code == _UNKNOWN_UUID:
            return f"sensor_uuid {cell('sensor_uuid').strip().lower()} is not in the mapping"
        return f"sensor_value '{cell('sensor_value')}' is not a finite number"


# --------------------------------------------------------------------------------------------
# Block internals
# --------------------------------------------------------------------------------------------


@dataclass
class _CsvRows:
    """Columns as Arrow read them, and where each row came from."""

    timestamps: Any  # StringArray
    uuids: Any  # StringArray
    values: Any  # DoubleArray (fast route) or StringArray (screened route)
    row_lines: IntArray | None  # line index per row; None: the non-empty lines in order
    line_rejections: list[Rejection]  # whole lines rejected before Arrow saw them

    @property
    def count(self) -> int:
        return len(self.timestamps)


@dataclass
class _Timestamps:
    instants: IntArray  # Unix microseconds, UTC; filled in for naive rows by localisation
    walls: IntArray  # naive rows: local wall time as if it were UTC microseconds
    naive: BoolArray
    unparseable: BoolArray


@dataclass
class _DstOutcome:
    rejected_ambiguous: BoolArray
    rejected_nonexistent: BoolArray
    by_order: int = 0
    by_rule: int = 0
    shifted: int = 0

    @classmethod
    def none(cls, count: int) -> _DstOutcome:
        return cls(np.zeros(count, np.bool_), np.zeros(count, np.bool_))


class _BlockLines:
    """Physical lines of a block, found with numpy only when something needs them."""

    def __init__(self, block: bytes, first_line_number: int) -> None:
        self._block = block
        self._first_line_number = first_line_number

    @cached_property
    def _bounds(self) -> tuple[IntArray, IntArray]:
        data = np.frombuffer(self._block, dtype=np.uint8)
        newlines = np.flatnonzero(data == _NEWLINE)
        starts = np.concatenate(([0], newlines + 1)).astype(np.int64)
        ends = np.concatenate((newlines, [data.size])).astype(np.int64)
        if data.size == 0 or data[-1] == _NEWLINE:
            starts, ends = starts[:-1], ends[:-1]  # nothing follows the final newline
        # The CR of a CRLF belongs to the line break, not to the line.
        last = data[np.maximum(ends - 1, 0)] if data.size else np.zeros(0, np.uint8)
        ends = ends - ((ends > starts) & (last == _CARRIAGE_RETURN))
        return starts, ends

    @property
    def starts(self) -> IntArray:
        return self._bounds[0]

    @property
    def ends(self) -> IntArray:
        """End of each line's content, without CR/LF."""
        return self._bounds[1]

    def non_empty(self) -> IntArray:
        return np.flatnonzero(self.ends > self.starts)

    def number(self, line: int) -> int:
        return self._first_line_number + line

    def text(self, line: int) -> str:
        content = self._block[int(self.starts[line]) : int(self.ends[line])]
        return content.decode("utf-8", errors="replace")

    def rejection(self, line: int, reason: str) -> Rejection:
        return Rejection(self.number(line), reason, self.text(line))


@dataclass
class _ScreenedLines:
    kept: IntArray  # indices of the lines Arrow should read, in order
    rejections: list[Rejection]
    has_quotes: bool


def _screen_lines(
    block: bytes, lines: _BlockLines, delimiter: str, expected_fields: int
) -> _ScreenedLines:
    """Find blank and malformed lines with vectorised scans so Arrow only sees good rows."""
    data = np.frombuffer(block, dtype=np.uint8)
    starts, ends = lines.starts, lines.ends
    count = starts.size
    blank = ends == starts
    reasons: dict[int, str] = {}

    def reject(mask: BoolArray, reason: str) -> None:
        for line in np.flatnonzero(mask & ~blank).tolist():
            reasons.setdefault(line, reason)

    def line_of(positions: IntArray) -> IntArray:
        return np.searchsorted(starts, positions, side="right") - 1

    if count:
        # Whitespace-only lines count as blank; only lines starting with blanks can be.
        first_bytes = data[np.minimum(starts, max(data.size - 1, 0))]
        maybe_blank = ~blank & ((first_bytes == _SPACE) | (first_bytes == _TAB))
        for line in np.flatnonzero(maybe_blank).tolist():
            blank[line] = not block[starts[line] : ends[line]].strip(b" \t")

    if not _is_utf8(block):
        not_utf8 = np.zeros(count, np.bool_)
        for line in np.unique(line_of(np.flatnonzero(data >= 0x80))).tolist():
            try:
                block[starts[line] : ends[line]].decode("utf-8")
            except UnicodeDecodeError:
                not_utf8[line] = True
        reject(not_utf8, "line is not valid UTF-8")

    if b"\r" in block:
        # Arrow would end a row at a lone CR; this numpy view of the lines would not.
        carriage_returns = np.flatnonzero(data == _CARRIAGE_RETURN)
        owner = line_of(carriage_returns)
        inside = carriage_returns < ends[owner]
        reject(np.isin(np.arange(count), owner[inside]), "carriage return inside the line")

    separators = np.flatnonzero(data == ord(delimiter))
    has_quotes = b'"' in block
    if has_quotes:
        quotes = np.flatnonzero(data == _QUOTE)
        quote_line = line_of(quotes)
        quotes_per_line = np.bincount(quote_line, minlength=count)
        reject(quotes_per_line % 2 == 1, "unbalanced quotes")
        reject(
            _misplaced_quotes(data, quotes, quote_line, starts, ends, delimiter),
            "malformed quoting (quotes must enclose whole fields)",
        )
        # A delimiter is inside a quoted field when an odd number of quotes precede it on
        # its line; doubled quotes inside a field keep the parity, as in CSV.
        separator_line = line_of(separators)
        quotes_before = (
            np.searchsorted(quotes, separators) - np.searchsorted(quotes, starts)[separator_line]
        )
        separators = separators[quotes_before % 2 == 0]
    fields = np.bincount(line_of(separators), minlength=count) + 1
    for line in np.flatnonzero((fields != expected_fields) & ~blank).tolist():
        reasons.setdefault(line, _field_count_reason(expected_fields, int(fields[line])))

    rejected = np.zeros(count, np.bool_)
    rejected[list(reasons)] = True
    return _ScreenedLines(
        kept=np.flatnonzero(~blank & ~rejected),
        rejections=[lines.rejection(line, reason) for line, reason in sorted(reasons.items())],
        has_quotes=has_quotes,
    )


def _field_count_reason(expected: int, got: int) -> str:
    return f"expected {expected} fields, got {got}"


def _misplaced_quotes(
    data: npt.NDArray[np.uint8],
    quotes: IntArray,
    quote_line: IntArray,
    starts: IntArray,
    ends: IntArray,
    delimiter: str,
) -> BoolArray:
    """Lines with a quote that does not open or close a whole field.

    Arrow (like Python's csv) treats a quote in the middle of an unquoted field as a literal
    character, so counting quote parity would misplace the field boundaries on such lines.
    """
    separator = ord(delimiter)
    bad = np.zeros(starts.size, np.bool_)
    if quotes.size == 0:
        return bad
    rank_on_line = np.arange(quotes.size) - np.searchsorted(quotes, starts)[quote_line]
    opening = rank_on_line % 2 == 0
    previous = data[np.maximum(quotes - 1, 0)]
    following = data[np.minimum(quotes + 1, data.size - 1)]
    opens_field = (quotes == starts[quote_line]) | (previous == separator) | (previous == _QUOTE)
    closes_field = (
        (quotes + 1 == ends[quote_line]) | (following == separator) | (following == _QUOTE)
    )
    misplaced = np.where(opening, ~opens_field, ~closes_field)
    bad[quote_line[misplaced]] = True
    return bad


def _join_lines(block: bytes, lines: _BlockLines, kept: IntArray) -> bytes:
    """The kept lines (with their line breaks) as one buffer, copied run by run."""
    if kept.size == 0:
        return b""
    next_starts = np.append(lines.starts[1:], len(block))
    run_breaks = np.flatnonzero(np.diff(kept) != 1)
    run_firsts = kept[np.concatenate(([0], run_breaks + 1))]
    run_lasts = kept[np.concatenate((run_breaks, [kept.size - 1]))]
    view = memoryview(block)
    return b"".join(
        view[int(lines.starts[first]) : int(next_starts[last])]
        for first, last in zip(run_firsts.tolist(), run_lasts.tolist(), strict=True)
    )


def _has_stray_carriage_return(block: bytes) -> bool:
    if b"\r" not in block:
        return False
    return block.count(b"\r") != block.count(b"\r\n") + block.endswith(b"\r")


def _is_utf8(block: bytes) -> bool:
    if block.isascii():
        return True
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _single_array(column: Any) -> Any:
    if column.num_chunks == 1:
        return column.chunk(0)
    return column.combine_chunks()


def _to_int64(array: Any) -> IntArray:
    result: IntArray = np.asarray(array.cast(pa.int64()).to_numpy(zero_copy_only=False))
    return result


def arrow_to_bool(array: Any) -> BoolArray:
    result: BoolArray = np.asarray(
        pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=np.bool_
    )
    return result


def _flag(codes: npt.NDArray[np.uint8], mask: BoolArray, code: int) -> None:
    codes[(codes == _OK) & mask] = code


def _parse_values(values: Any) -> npt.NDArray[np.float64]:
    """Float64 per row; NaN wherever the text is not a number (non-finite ones included)."""
    if pa.types.is_floating(values.type):
        parsed: npt.NDArray[np.float64] = np.asarray(
            values.to_numpy(zero_copy_only=False), dtype=np.float64
        )
        return parsed  # nulls (empty cells) come out as NaN
    trimmed = pc.utf8_trim_whitespace(values)
    numeric = np.flatnonzero(arrow_to_bool(pc.match_substring_regex(trimmed, _DECIMAL_PATTERN)))
    result = np.full(len(values), np.nan)
    if numeric.size:
        cast = cast_where_possible(trimmed.take(pa.array(numeric)), pa.float64())
        result[numeric] = np.asarray(cast.to_numpy(zero_copy_only=False), dtype=np.float64)
    return result


def _parse_mixed_timestamps(texts: Any) -> _Timestamps:
    """Slow route: offset and naive timestamps mixed, or some unparseable."""
    count = len(texts)
    parsed = _Timestamps(
        instants=np.zeros(count, np.int64),
        walls=np.zeros(count, np.int64),
        naive=np.zeros(count, np.bool_),
        unparseable=np.ones(count, np.bool_),
    )
    trimmed = pc.utf8_trim_whitespace(texts)
    offset_hint = arrow_to_bool(pc.match_substring_regex(trimmed, ENDS_WITH_OFFSET))
    for hinted, styles in (
        (offset_hint, (UTC_MICROS, NAIVE_MICROS)),
        (~offset_hint, (NAIVE_MICROS, UTC_MICROS)),
    ):
        rows = np.flatnonzero(hinted)
        for target in styles:
            if rows.size == 0:
                break
            cast = cast_where_possible(trimmed.take(pa.array(rows)), target)
            ok = arrow_to_bool(cast.is_valid())
            micros = _to_int64(pc.fill_null(cast.cast(pa.int64()), 0))
            naive = target == NAIVE_MICROS
            (parsed.walls if naive else parsed.instants)[rows[ok]] = micros[ok]
            parsed.naive[rows[ok]] = naive
            parsed.unparseable[rows[ok]] = False
            rows = rows[~ok]
    return parsed


def cast_where_possible(strings: Any, target: Any) -> Any:
    """Cast, turning only the elements Arrow cannot parse into nulls.

    Arrow's cast fails as a whole, so halve until the failures are isolated: a few bad
    elements cost a few extra casts of shrinking slices.
    """
    try:
        return pc.cast(strings, target)
    except pa.ArrowInvalid:
        if len(strings) <= 1:
            return pa.nulls(len(strings), target)
        half = len(strings) // 2
        return pa.concat_arrays(
            [
                cast_where_possible(strings.slice(0, half), target),
                cast_where_possible(strings.slice(half), target),
            ]
        )


def _localize_walls(walls: IntArray, zone: ZoneInfo, *, ambiguous: Any) -> IntArray:
    """Unix microseconds of local wall times; NaT (int64 min) where ``ambiguous`` leaves it."""
    if isinstance(ambiguous, bool):
        ambiguous = np.full(walls.size, ambiguous)
    localized = pd.DatetimeIndex(walls.view("datetime64[us]")).tz_localize(
        zone, ambiguous=ambiguous, nonexistent="NaT"
    )
    result: IntArray = np.asarray(localized.as_unit("us").asi8, dtype=np.int64)
    return result


def _later_repeats(instants: IntArray, sensors: IntArray, known_count: int) -> BoolArray:
    """True for each (instant, sensor) pair that already occurred earlier in the arrays."""
    repeated = np.zeros(instants.size, np.bool_)
    if instants.size < 2:
        return repeated
    earliest = int(instants.min())
    span = int(instants.max()) - earliest + 1
    if span < (1 << 62) // max(known_count, 1):
        keys = (instants - earliest) * known_count + sensors
        _, first_seen = np.unique(keys, return_index=True)
        if first_seen.size == keys.size:
            return repeated
        repeated[:] = True
        repeated[first_seen] = False
        return repeated
    # A block spanning centuries with many sensors: keys would overflow, sort pairs instead.
    order = np.lexsort((np.arange(instants.size), sensors, instants))
    same = (np.diff(instants[order]) == 0) & (np.diff(sensors[order]) == 0)
    repeated[order[1:][same]] = True
    return repeated


# --------------------------------------------------------------------------------------------
# The repeated autumn hour, resolved from row order
# --------------------------------------------------------------------------------------------


@dataclass
class _RepeatedHourProgress:
    """What the rows seen so far say about one repeated hour of the file."""

    highest_wall: int  # latest wall time among its rows so far
    wall_went_back: bool  # the clock jumped back: later rows are the second pass
    pass_before_jump: Literal["first", "second"] | None = None  # decided from neighbours


@dataclass
class _RepeatedHourOrder:
    """Decides first or second pass of ambiguous naive rows from their order in the file.

    Files are sorted by true time. Inside a repeated hour the wall clock jumps back once
    (02:59 -> 02:00 in Berlin): rows before the jump are the first pass (summer time), rows
    after it the second. Without a jump, a row just before the hour earlier in the file
    means first pass; starting inside the hour and continuing past it means second pass.
    Anything else is left to the "earliest" rule.
    """

    zone: ZoneInfo
    hours: dict[int, _RepeatedHourProgress] = field(default_factory=dict)  # by transition
    last_plain_wall: int | None = None  # latest non-ambiguous naive row of earlier blocks

    def note_plain_rows(self, walls: IntArray) -> None:
        if walls.size:
            self.last_plain_wall = int(walls[-1])

    def resolve(
        self, walls: IntArray, ambiguous: BoolArray, earliest: IntArray, latest: IntArray
    ) -> tuple[BoolArray, BoolArray]:
        """(second pass, decided by order) per ambiguous row.

        ``walls`` are all naive rows of the block in file order, ``earliest``/``latest`` the
        two candidate instants of the rows where ``ambiguous`` is set.
        """
        ambiguous_rows = np.flatnonzero(ambiguous)
        plain_rows = np.flatnonzero(~ambiguous)
        ambiguous_walls = walls[ambiguous_rows]
        second_pass = np.zeros(ambiguous_rows.size, np.bool_)
        by_order = np.zeros(ambiguous_rows.size, np.bool_)
        pending = np.ones(ambiguous_rows.size, np.bool_)
        # One iteration per distinct repeated hour in the block (normally one).
        while pending.any():
            first = int(np.argmax(pending))
            transition = _transition_between(self.zone, int(earliest[first]), int(latest[first]))
            wall = int(ambiguous_walls[first])
            hour_start = transition + (wall - int(latest[first]))  # offset after the change
            hour_end = transition + (wall - int(earliest[first]))  # offset before the change
            members = pending & (ambiguous_walls >= hour_start) & (ambiguous_walls < hour_end)
            members[first] = True
            pending &= ~members
            indices = np.flatnonzero(members)
            second, ordered = self._resolve_hour(
                transition,
                (hour_start, hour_end),
                ambiguous_rows[indices],
                walls,
                plain_rows,
            )
            second_pass[indices] = second
            by_order[indices] = ordered
        return second_pass, by_order

    def _resolve_hour(
        self,
        transition: int,
        hour: tuple[int, int],
        rows: IntArray,
        walls: IntArray,
        plain_rows: IntArray,
    ) -> tuple[BoolArray, BoolArray]:
        progress = self.hours.setdefault(
            transition, _RepeatedHourProgress(highest_wall=NAT, wall_went_back=False)
        )
        hour_walls = walls[rows]
        highest_before = np.maximum.accumulate(
            np.concatenate(([progress.highest_wall], hour_walls[:-1]))
        )
        went_back = np.logical_or.accumulate(hour_walls < highest_before) | progress.wall_went_back
        second_pass = went_back.copy()
        by_order = went_back.copy()
        before_jump = ~went_back
        if before_jump.any():
            if went_back.any():
                decided: Literal["first", "second"] | None = "first"
            else:
                decided = progress.pass_before_jump or self._pass_from_neighbours(
                    hour, rows[before_jump], walls, plain_rows
                )
            if decided is not None:
                progress.pass_before_jump = decided
                second_pass[before_jump] = decided == "second"
                by_order[before_jump] = True
            # Otherwise: undecidable here, "earliest" (first pass) as by rule.
        progress.highest_wall = max(progress.highest_wall, int(hour_walls.max()))
        progress.wall_went_back = bool(went_back[-1])
        return second_pass, by_order

    def _pass_from_neighbours(
        self, hour: tuple[int, int], rows: IntArray, walls: IntArray, plain_rows: IntArray
    ) -> Literal["first", "second"] | None:
        hour_start, hour_end = hour
        before = int(np.searchsorted(plain_rows, rows[0])) - 1
        previous = int(walls[plain_rows[before]]) if before >= 0 else self.last_plain_wall
        # "That night": a day's margin, so a row from long before says nothing.
        if previous is not None and hour_start - _US_PER_DAY <= previous < hour_start:
            return "first"
        after = int(np.searchsorted(plain_rows, rows[-1]))
        if (
            after < plain_rows.size
            and hour_end <= walls[plain_rows[after]] < hour_end + _US_PER_DAY
        ):
            return "second"
        return None


def _transition_between(zone: ZoneInfo, earliest_us: int, latest_us: int) -> int:
    """Unix microseconds of the offset change in (earliest, latest], found by bisection.

    ``zoneinfo`` has no public list of transitions; offsets change on whole seconds.
    """

    def offset_at(second: int) -> Any:
        return datetime.fromtimestamp(second, zone).utcoffset()

    low = earliest_us // _US_PER_SECOND
    high = -(-latest_us // _US_PER_SECOND)
    offset_before = offset_at(low)
    while high - low > 1:
        middle = (low + high) // 2
        if offset_at(middle) == offset_before:
            low = middle
        else:
            high = middle
    return high * _US_PER_SECOND
