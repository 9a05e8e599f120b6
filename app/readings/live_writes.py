"""POST /readings: batches of new readings pushed by devices and services.

A batch goes through four steps:

1. The body is read with a size cap and parsed into columns. JSON and NDJSON are decoded by
   orjson and taken apart column by column (no model per reading); CSV goes through the
   ingestion parser (ReadingsBlockParser), off the event loop. Timestamps are parsed by
   Arrow and naive ones localised by pandas; zoneinfo only sees rows of a DST hour.
2. The sensors it names are looked up with one query of the metadata database.
3. The readings are validated with numpy masks, repeats inside the batch dropped (the first
   one counts), and the rest encoded as binary COPY tuples.
4. One transaction of the timeseries database: the shared side of the sensor deletion lock,
   rows of sensors in deleted_sensors rejected, the rows, sensor_stats. The rows go by
   binary COPY straight into `readings`; a batch that meets a stored (sensor, instant) is
   written again through a staging table and INSERT ... ON CONFLICT DO NOTHING, so a
   re-sent batch is harmless. Monthly partitions are ensured before the transaction, once
   per month per process.

Unlike the GET endpoints, no connection is held while the body uploads or parses: the
service borrows one for the lookup and one for the write, each only as long as it needs.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Protocol, TypeVar
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from app.core.config import Settings
from app.core.db import Connection
from app.core.lifespan import Resources
from app.ingest.parsing import (
    COPY_HEADER,
    COPY_TRAILER,
    COPY_TUPLE,
    ENDS_WITH_OFFSET,
    NAIVE_MICROS,
    NAT,
    PG_EPOCH_US,
    UTC_MICROS,
    UTF8_BOM,
    UUID_PATTERN,
    AmbiguousRule,
    CsvLayout,
    FileRejected,
    NonexistentRule,
    ReadingsBlockParser,
    arrow_to_bool,
    cast_where_possible,
    detect_layout,
    encode_copy_tuples,
)
from app.ingest.repository import (
    add_to_sensor_stats,
    copy_readings,
    ensure_partitions,
    merge_readings,
)
from app.metrics import instruments
from app.metrics.instruments import IngestSource
from app.readings import repository
from app.readings.exceptions import (
    BatchTooLarge,
    InvalidBatch,
    NoValidReadings,
    UnsupportedBodyFormat,
)
from app.readings.schemas import LiveWriteResult, RejectedReading

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
CodeArray = npt.NDArray[np.uint8]

MAX_LISTED_REJECTIONS: Final = 1000
# Decoding and validating 1,000 readings (~80 KB of JSON, ~70 KB of CSV) takes ~1.6 ms
# (JSON) or ~2 ms (CSV) on the event loop; bodies over this size (~3,000 readings) go to a
# thread, so that other requests are not held up behind them for long. Small bodies stay
# on the loop: bench/live_writes.py --format csv measured 6.0 ms of service CPU per batch
# with two thread hops, 4.3 ms without, and p99 115 -> 77 ms.
INLINE_PARSE_MAX_BYTES: Final = 256 << 10
# A batch spread over many months would otherwise create a partition per month; the rest
# of its rows land in the default partition (still stored, and moved out later).
MAX_NEW_PARTITIONS_PER_BATCH: Final = 24
CSV_COLUMNS: Final = ("timestamp", "sensor_uuid", "sensor_value")

T = TypeVar("T")


class BodyFormat(StrEnum):
    JSON = "application/json"
    NDJSON = "application/x-ndjson"
    CSV = "text/csv"


_MEDIA_TYPES: Final = {
    "application/json": BodyFormat.JSON,
    "application/x-ndjson": BodyFormat.NDJSON,
    "application/ndjson": BodyFormat.NDJSON,
    "text/csv": BodyFormat.CSV,
}

_UNIX_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_UUID_BYTES: Final = re.compile(
    rb"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
)
_NOT_IN_MAPPING: Final = re.compile(r"^sensor_uuid (\S+) is not in the mapping$")
_NO_FIELDS: Final[dict[str, Any]] = {}

# Why a JSON reading is rejected; the first that applies is reported.
_OK: Final = 0
_NOT_OBJECT: Final = 1
_NO_SENSOR: Final = 2
_BOTH_SENSORS: Final = 3
_BAD_NAME: Final = 4
_MALFORMED_UUID: Final = 5
_NO_TIMESTAMP: Final = 6
_BAD_TIMESTAMP: Final = 7
_AMBIGUOUS: Final = 8
_NONEXISTENT: Final = 9
_NO_VALUE: Final = 10
_BAD_VALUE: Final = 11
_UNKNOWN_NAME: Final = 12
_UNKNOWN_UUID: Final = 13
_DELETED: Final = 14

SENSOR_DELETED: Final = "sensor deleted"


# --------------------------------------------------------------------------------------------
# The request body
# --------------------------------------------------------------------------------------------


def body_format(content_type: str | None) -> BodyFormat:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    found = _MEDIA_TYPES.get(media_type)
    if found is None:
        raise UnsupportedBodyFormat(content_type, [f.value for f in BodyFormat])
    return found


def _body_too_large(max_bytes: int) -> BatchTooLarge:
    return BatchTooLarge(
        f"the body is larger than LIVE_WRITE_MAX_BYTES = {max_bytes:,} bytes; "
        "send the readings in smaller batches",
        context={"max_bytes": max_bytes},
    )


async def read_body(
    chunks: AsyncIterator[bytes], content_length: str | None, max_bytes: int
) -> bytes:
    """The whole body, refused as soon as it is known to exceed `max_bytes`: from a
    Content-Length before reading anything, else while it streams in (chunked uploads)."""
    declared = (content_length or "").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise _body_too_large(max_bytes)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise _body_too_large(max_bytes)
        parts.append(chunk)
    return b"".join(parts)


def _too_many_rows(count: int, max_rows: int) -> BatchTooLarge:
    return BatchTooLarge(
        f"{count:,} readings in one request; at most LIVE_WRITE_MAX_ROWS = {max_rows:,} "
        "are accepted, send smaller batches",
        context={"max_rows": max_rows},
    )


def _no_readings() -> InvalidBatch:
    return InvalidBatch("no readings: the batch is empty")


# --------------------------------------------------------------------------------------------
# Sensors and the outcome of validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownSensors:
    """Sensors a batch may write to, from one lookup; sensor i is row i of every field."""

    names: Any  # pa.StringArray
    uuid_texts: Any  # pa.StringArray, canonical lower case
    uuids: list[UUID]
    uuid_bytes: npt.NDArray[np.uint8]  # (sensors, 16)

    @classmethod
    def of(cls, records: Sequence[asyncpg.Record]) -> KnownSensors:
        """From the lookup's rows, in uuid order: the COPY then inserts in index order
        whichever request it is, so concurrent batches cannot deadlock on their keys."""
        uuids: list[UUID] = [record["sensor_uuid"] for record in records]
        return cls(
            names=pa.array([record["sensor_name"] for record in records], pa.string()),
            uuid_texts=pa.array([str(u) for u in uuids], pa.string()),
            uuids=uuids,
            uuid_bytes=np.frombuffer(b"".join(u.bytes for u in uuids), np.uint8).reshape(-1, 16),
        )


@dataclass(frozen=True)
class PreparedBatch:
    """A validated batch: what to write, and what was refused."""

    payload: bytes  # a complete binary COPY stream of the accepted rows
    accepted: int  # rows to write (repeats within the batch excluded)
    duplicate: int  # repeats of an earlier (sensor, instant) of the batch
    rejected: list[RejectedReading]  # the first MAX_LISTED_REJECTIONS, in index order
    rejected_count: int
    by_sensor: list[tuple[UUID, datetime, datetime, int]]  # (uuid, first, last, count)
    months: list[int]  # UTC months (months since 1970-01) of the accepted rows

    @property
    def sensor_uuids(self) -> list[UUID]:
        return [sensor for sensor, *_ in self.by_sensor]

    def no_valid_readings(self) -> NoValidReadings:
        return NoValidReadings(
            [rejection.model_dump() for rejection in self.rejected], self.rejected_count
        )


class Batch(Protocol):
    """A parsed body: which sensors to look up, and validation once they are known."""

    lookup_names: list[str]
    lookup_uuids: list[UUID]
    size: int  # bytes of the body, to decide whether work goes to a thread

    def prepare(self, known: KnownSensors, deleted: frozenset[UUID]) -> PreparedBatch: ...


def _months_of(instants: IntArray) -> list[int]:
    months = instants.astype("datetime64[us]").astype("datetime64[M]").astype(np.int64)
    return [int(month) for month in np.unique(months)]


def _encode(instants: IntArray, uuid_bytes: npt.NDArray[np.uint8], values: Any) -> bytes:
    return COPY_HEADER + encode_copy_tuples(instants, uuid_bytes, values) + COPY_TRAILER


def _utc_datetimes(microseconds: IntArray) -> list[datetime]:
    naive: list[datetime] = microseconds.astype("datetime64[us]").tolist()
    return [moment.replace(tzinfo=UTC) for moment in naive]


def _flag(codes: CodeArray, mask: BoolArray, code: int) -> None:
    codes[(codes == _OK) & mask] = code


def _to_int64(array: Any, null: int) -> IntArray:
    result: IntArray = np.asarray(
        pc.fill_null(array.cast(pa.int64()), null).to_numpy(zero_copy_only=False),
        dtype=np.int64,
    )
    return result


# --------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------


def parse_timestamps(
    texts: Any, zone: ZoneInfo, ambiguous: AmbiguousRule, nonexistent: NonexistentRule
) -> tuple[IntArray, CodeArray]:
    """Unix microseconds per ISO 8601 text (an Arrow string array, nulls allowed), and
    per row _OK, _BAD_TIMESTAMP, _AMBIGUOUS or _NONEXISTENT.

    A time with an offset or Z is that instant; a naive one is local time in `zone`. For
    naive times in a DST hour, as zoneinfo reads them: the repeated hour takes the first
    occurrence (fold=0) for "infer" and "earliest", the second for "latest"; the skipped
    hour takes the offset before the gap (02:30 -> 03:30 summer time) for
    "shift_forward"; "reject" rejects the row."""
    count = len(texts)
    instants = np.zeros(count, np.int64)
    codes = np.zeros(count, np.uint8)
    trimmed = pc.utf8_trim_whitespace(texts)
    present = arrow_to_bool(trimmed.is_valid())
    codes[~present] = _BAD_TIMESTAMP
    with_offset = arrow_to_bool(pc.match_substring_regex(trimmed, ENDS_WITH_OFFSET))
    for rows, target in (
        (np.flatnonzero(present & with_offset), UTC_MICROS),
        (np.flatnonzero(present & ~with_offset), NAIVE_MICROS),
    ):
        if rows.size == 0:
            continue
        subset = trimmed if rows.size == count else trimmed.take(pa.array(rows))
        cast = cast_where_possible(subset, target)
        parsed = arrow_to_bool(cast.is_valid())
        micros = _to_int64(cast, 0)[parsed]
        codes[rows[~parsed]] = _BAD_TIMESTAMP
        good = rows[parsed]
        if target is UTC_MICROS:
            instants[good] = micros
        else:
            instants[good], codes[good] = _localize(micros, zone, ambiguous, nonexistent)
    return instants, codes


def _localize(
    walls: IntArray, zone: ZoneInfo, ambiguous: AmbiguousRule, nonexistent: NonexistentRule
) -> tuple[IntArray, CodeArray]:
    localized = pd.DatetimeIndex(walls.view("datetime64[us]")).tz_localize(
        zone, ambiguous="NaT", nonexistent="NaT"
    )
    instants = np.array(localized.as_unit("us").asi8, dtype=np.int64)
    codes = np.zeros(walls.size, np.uint8)
    # Only rows of a repeated or skipped hour are left, normally none.
    for row in np.flatnonzero(instants == NAT).tolist():
        wall = datetime(1970, 1, 1) + timedelta(microseconds=int(walls[row]))
        first, second = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
        first_offset, second_offset = first.utcoffset(), second.utcoffset()
        assert first_offset is not None
        assert second_offset is not None
        if first_offset > second_offset:  # the clock went back: this wall time repeats
            if ambiguous == "reject":
                codes[row] = _AMBIGUOUS
                continue
            chosen = second if ambiguous == "latest" else first
        else:  # the clock went forward: this wall time never happened
            if nonexistent == "reject":
                codes[row] = _NONEXISTENT
                continue
            chosen = first  # fold=0: the offset in force before the gap
        instants[row] = (chosen - _UNIX_EPOCH) // timedelta(microseconds=1)
    return instants, codes


# --------------------------------------------------------------------------------------------
# JSON and NDJSON
# --------------------------------------------------------------------------------------------


def decode_json_array(body: bytes) -> list[Any]:
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidBatch(f"the body is not valid JSON: {error}") from None
    if not isinstance(items, list):
        raise InvalidBatch(
            f"the body must be a JSON array of readings, not a JSON {type(items).__name__}"
        )
    return items


def decode_ndjson(body: bytes) -> tuple[list[Any], IntArray | None]:
    """The items, and the 0-based line of each when blank lines make them differ."""
    lines = body.split(b"\n")
    if lines and not lines[-1].strip():
        lines.pop()  # the final line break, or trailing blanks
    try:
        return [orjson.loads(line) for line in lines], None
    except orjson.JSONDecodeError:
        pass  # blank lines, or a bad one: go line by line to tell which
    items, positions = [], []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as error:
            raise InvalidBatch(f"NDJSON line {number + 1} is not valid JSON: {error}") from None
        positions.append(number)
    return items, np.array(positions, dtype=np.int64)


_STRINGS: Final = {str}
_OPTIONAL_STRINGS: Final = {str, type(None)}
_NUMBERS: Final = {float, int}  # exact types: bool is not a number here


def _string_column(values: list[Any]) -> tuple[Any, BoolArray]:
    """(Arrow strings, null where a value is not a string; whether each value was given).
    A set of the types present picks the route: one pass for the usual column."""
    kinds = set(map(type, values))
    if kinds <= _STRINGS:
        return pa.array(values, pa.string()), np.ones(len(values), np.bool_)
    if kinds <= _OPTIONAL_STRINGS:
        strings = pa.array(values, pa.string())
        return strings, arrow_to_bool(strings.is_valid())
    given = np.array([value is not None for value in values], dtype=np.bool_)
    return pa.array([v if type(v) is str else None for v in values], pa.string()), given


def _number_column(values: list[Any]) -> tuple[npt.NDArray[np.float64], BoolArray]:
    """(float64, NaN where a value is not a number; whether each value was given)."""
    if set(map(type, values)) <= _NUMBERS:
        return np.array(values, dtype=np.float64), np.ones(len(values), np.bool_)
    given = np.array([value is not None for value in values], dtype=np.bool_)
    numbers = [v if type(v) in _NUMBERS else np.nan for v in values]
    return np.array(numbers, dtype=np.float64), given


def _shown(value: Any) -> str:
    """A value as it appears in a reason: strings quoted like the CSV reasons, others as
    JSON, both cut short."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    if len(text) > 80:
        text = text[:77] + "..."
    return f"'{text}'" if isinstance(value, str) else text


class JsonBatch:
    """Readings decoded from JSON, as columns; rejection codes that need no lookup are
    set here, the sensor lookup's in prepare()."""

    def __init__(
        self, items: list[Any], positions: IntArray | None, settings: Settings, size: int
    ) -> None:
        count = len(items)
        self.size = size
        self._items = items
        self._positions = positions
        self._zone = settings.source_zone
        codes = np.zeros(count, np.uint8)
        rows: list[Any] = items
        if set(map(type, items)) != {dict}:
            objects = np.array([type(item) is dict for item in items], dtype=np.bool_)
            _flag(codes, ~objects, _NOT_OBJECT)
            rows = [item if type(item) is dict else _NO_FIELDS for item in items]

        self._names, has_name = _string_column([row.get("sensor_name") for row in rows])
        raw_uuids, has_uuid = _string_column([row.get("sensor_uuid") for row in rows])
        _flag(codes, ~has_name & ~has_uuid, _NO_SENSOR)
        _flag(codes, has_name & has_uuid, _BOTH_SENSORS)
        _flag(codes, has_name & ~arrow_to_bool(self._names.is_valid()), _BAD_NAME)
        self._uuid_texts = pc.utf8_lower(pc.utf8_trim_whitespace(raw_uuids))
        canonical = arrow_to_bool(pc.match_substring_regex(self._uuid_texts, UUID_PATTERN))
        _flag(codes, has_uuid & ~canonical, _MALFORMED_UUID)
        self._by_name = has_name

        texts, has_timestamp = _string_column([row.get("timestamp") for row in rows])
        _flag(codes, ~has_timestamp, _NO_TIMESTAMP)
        self._instants, timestamp_codes = parse_timestamps(
            texts, self._zone, settings.dst_ambiguous, settings.dst_nonexistent
        )
        codes = np.where(codes == _OK, timestamp_codes, codes).astype(np.uint8)

        self._values, has_value = _number_column([row.get("value") for row in rows])
        _flag(codes, ~has_value, _NO_VALUE)
        _flag(codes, ~np.isfinite(self._values), _BAD_VALUE)
        self._codes = codes

        self.lookup_names: list[str] = pc.unique(self._names.drop_null()).to_pylist()
        lookup_texts = pc.unique(self._uuid_texts.filter(pa.array(canonical)))
        self.lookup_uuids = [UUID(text) for text in lookup_texts.to_pylist()]

    def prepare(self, known: KnownSensors, deleted: frozenset[UUID]) -> PreparedBatch:
        by_name = _to_int64(pc.index_in(self._names, value_set=known.names), -1)
        by_uuid = _to_int64(pc.index_in(self._uuid_texts, value_set=known.uuid_texts), -1)
        sensors = np.where(self._by_name, by_name, by_uuid)
        codes = self._codes.copy()
        _flag(codes, (sensors < 0) & self._by_name, _UNKNOWN_NAME)
        _flag(codes, (sensors < 0) & ~self._by_name, _UNKNOWN_UUID)
        if deleted:
            is_deleted = np.array([u in deleted for u in known.uuids] + [False], np.bool_)
            _flag(codes, is_deleted[sensors], _DELETED)  # index -1 is the False at the end

        accepted = np.flatnonzero(codes == _OK)
        instants, sensors = self._instants[accepted], sensors[accepted]
        # By sensor, then time, then row: repeats follow their first occurrence, and the
        # COPY goes in index order, which is cheaper for PostgreSQL.
        order = np.lexsort((accepted, instants, sensors))
        instants, sensors = instants[order], sensors[order]
        repeat = np.zeros(order.size, np.bool_)
        repeat[1:] = (sensors[1:] == sensors[:-1]) & (instants[1:] == instants[:-1])
        keep = order[~repeat]
        instants, sensors = instants[~repeat], sensors[~repeat]
        # Rows are grouped by sensor and in time order within each group.
        starts = np.flatnonzero(np.diff(sensors, prepend=-1))
        ends = np.append(starts[1:], sensors.size)[: starts.size] - 1

        rejected_rows = np.flatnonzero(codes != _OK)
        listed = rejected_rows[:MAX_LISTED_REJECTIONS].tolist()
        indexes = listed if self._positions is None else self._positions[listed].tolist()
        return PreparedBatch(
            payload=_encode(instants, known.uuid_bytes[sensors], self._values[accepted][keep]),
            accepted=int(keep.size),
            duplicate=int(repeat.sum()),
            rejected=[
                RejectedReading(index=index, reason=self._reason(row, int(codes[row])))
                for row, index in zip(listed, indexes, strict=True)
            ],
            rejected_count=int(rejected_rows.size),
            by_sensor=[
                (known.uuids[sensor], first, last, count)
                for sensor, first, last, count in zip(
                    sensors[starts].tolist(),
                    _utc_datetimes(instants[starts]),
                    _utc_datetimes(instants[ends]),
                    (ends - starts + 1).tolist(),
                    strict=True,
                )
            ],
            months=_months_of(instants),
        )

    def _reason(self, row: int, code: int) -> str:
        item = self._items[row]
        if code == _NOT_OBJECT:
            return f"not a JSON object: {_shown(item)}"
        if code == _NO_SENSOR:
            return "missing sensor_name or sensor_uuid"
        if code == _BOTH_SENSORS:
            return "give either sensor_name or sensor_uuid, not both"
        if code == _BAD_NAME:
            return f"sensor_name {_shown(item['sensor_name'])} is not a string"
        if code == _MALFORMED_UUID:
            return f"malformed sensor_uuid {_shown(item['sensor_uuid'])}"
        if code == _NO_TIMESTAMP:
            return "missing timestamp"
        if code == _BAD_TIMESTAMP:
            return f"unparseable timestamp {_shown(item['timestamp'])}"
        if code == _AMBIGUOUS:
            return f"ambiguous local time '{item['timestamp']}' in {self._zone} (repeated DST hour)"
        if code == _NONEXISTENT:
            return (
                f"nonexistent local time '{item['timestamp']}' in {self._zone} (skipped DST hour)"
            )
        if code == _NO_VALUE:
            return "missing value"
        if code == _BAD_VALUE:
            return f"value {_shown(item['value'])} is not a finite number"
        if code == _UNKNOWN_NAME:
            return f"no sensor named {item['sensor_name']!r}"
        if code == _UNKNOWN_UUID:
            return f"unknown sensor_uuid {item['sensor_uuid'].strip().lower()}"
        return SENSOR_DELETED


def parse_json(body: bytes, body_format: BodyFormat, settings: Settings) -> JsonBatch:
    if body_format is BodyFormat.NDJSON:
        items, positions = decode_ndjson(body)
    else:
        items, positions = decode_json_array(body), None
    if not items:
        raise _no_readings()
    if len(items) > settings.live_write_max_rows:
        raise _too_many_rows(len(items), settings.live_write_max_rows)
    return JsonBatch(items, positions, settings, len(body))


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


class CsvBatch:
    """The data-file format (`timestamp;sensor_uuid;sensor_value` with a header, or any
    layout ingestion accepts), validated by the ingestion parser itself."""

    def __init__(self, body: bytes, settings: Settings) -> None:
        header, _, data = body.removeprefix(UTF8_BOM).partition(b"\n")
        if not data or data.isspace():
            raise _no_readings()
        try:
            self._layout = detect_layout(header.rstrip(b"\r"), CSV_COLUMNS)
        except FileRejected as rejected:
            raise InvalidBatch(f"CSV header line: {rejected.reason}") from None
        self.size = len(body)
        self._data = data
        self._settings = settings
        self.lookup_names: list[str] = []
        self.lookup_uuids = [UUID(text) for text in self._uuid_texts()]

    def _uuid_texts(self) -> list[str]:
        """The distinct well-formed uuids of the sensor_uuid column, read by Arrow alone;
        every uuid-like text of the body when Arrow cannot split it into rows."""
        layout: CsvLayout = self._layout
        names = [f"column_{i}" for i in range(len(layout.column_names))]
        column = names[layout.indices["sensor_uuid"]]
        try:
            table = pa_csv.read_csv(
                pa.py_buffer(self._data),
                read_options=pa_csv.ReadOptions(column_names=names, use_threads=False),
                parse_options=pa_csv.ParseOptions(
                    delimiter=layout.delimiter,
                    quote_char='"',
                    invalid_row_handler=lambda _: "skip",
                ),
                convert_options=pa_csv.ConvertOptions(
                    include_columns=[column], column_types={column: pa.string()}
                ),
            )
        except pa.ArrowInvalid:
            found = {match.decode() for match in _UUID_BYTES.findall(self._data)}
            distinct = pa.array(sorted(found), pa.string())
        else:
            # Exact for well-formed rows; prepare() checks again with the parser's count.
            if table.num_rows > self._settings.live_write_max_rows:
                raise _too_many_rows(table.num_rows, self._settings.live_write_max_rows)
            distinct = pc.unique(table.column(column).combine_chunks())
        normalised = pc.unique(pc.utf8_lower(pc.utf8_trim_whitespace(distinct)))
        canonical = pc.match_substring_regex(normalised, UUID_PATTERN)
        texts: list[str] = normalised.filter(canonical).to_pylist()
        return texts

    def prepare(self, known: KnownSensors, deleted: frozenset[UUID]) -> PreparedBatch:
        deleted_texts = {str(u) for u in deleted}
        parser = ReadingsBlockParser(
            self._layout,
            [text for text in known.uuid_texts.to_pylist() if text not in deleted_texts],
            self._settings.source_zone,
            ambiguous=self._settings.dst_ambiguous,
            nonexistent=self._settings.dst_nonexistent,
            group_by_sensor=True,
        )
        # Line 0 is the first line after the header: line numbers are the indexes.
        parsed = parser.parse(self._data, 0)
        if parsed.rows_read == 0:
            raise _no_readings()
        if parsed.rows_read > self._settings.live_write_max_rows:
            raise _too_many_rows(parsed.rows_read, self._settings.live_write_max_rows)
        tuples = np.frombuffer(parsed.copy_rows, dtype=COPY_TUPLE)
        return PreparedBatch(
            payload=COPY_HEADER + parsed.copy_rows + COPY_TRAILER,
            accepted=parsed.rows_accepted,
            duplicate=parsed.duplicates_in_block,
            rejected=[
                RejectedReading(index=r.line_number, reason=_csv_reason(r.reason, deleted_texts))
                for r in parsed.rejected[:MAX_LISTED_REJECTIONS]
            ],
            rejected_count=len(parsed.rejected),
            by_sensor=[
                (s.sensor_uuid, first, last, s.count)
                for s, first, last in zip(
                    parsed.by_sensor,
                    _utc_datetimes(np.array([s.first_us for s in parsed.by_sensor], np.int64)),
                    _utc_datetimes(np.array([s.last_us for s in parsed.by_sensor], np.int64)),
                    strict=True,
                )
            ],
            months=_months_of(tuples["ts"].astype(np.int64) + PG_EPOCH_US),
        )


def _csv_reason(reason: str, deleted: set[str]) -> str:
    """The ingestion parser's reasons, but an unknown uuid is named as for JSON: the
    parser only knows the sensors it was given, and calls that "the mapping"."""
    unknown = _NOT_IN_MAPPING.match(reason)
    if unknown is None:
        return reason
    text = unknown.group(1)
    return SENSOR_DELETED if text in deleted else f"unknown sensor_uuid {text}"


# --------------------------------------------------------------------------------------------
# Partitions
# --------------------------------------------------------------------------------------------


class PartitionMonths:
    """Months whose partition of `readings` is known to exist, per timeseries database,
    for the life of the process: a steady stream of writes asks PostgreSQL once a month.
    A stale entry costs nothing but speed: rows of a month without a partition land in
    the default one."""

    def __init__(self) -> None:
        self._partitioned: dict[str, bool] = {}
        self._months: dict[str, set[int]] = {}

    async def ensure(
        self, connection: Connection, database_url: str, months: Sequence[int]
    ) -> None:
        """Create missing monthly partitions; call it outside the write transaction, so
        the CREATE never waits on a lock that transaction holds."""
        partitioned = self._partitioned.get(database_url)
        if partitioned is None:
            storage = await repository.readings_storage(connection)
            partitioned = self._partitioned[database_url] = storage == "postgresql-partitioned"
        if not partitioned:
            return  # TimescaleDB creates chunks by itself
        ensured = self._months.setdefault(database_url, set())
        missing = [month for month in months if month not in ensured]
        if len(missing) > MAX_NEW_PARTITIONS_PER_BATCH:
            logger.warning(
                "a live write spans %d months without a partition; creating %d, the rest "
                "go to the default partition",
                len(missing),
                MAX_NEW_PARTITIONS_PER_BATCH,
            )
        for month in missing[:MAX_NEW_PARTITIONS_PER_BATCH]:
            start = datetime(1970 + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            await ensure_partitions(connection, start, start)
            ensured.add(month)


partition_months = PartitionMonths()


# --------------------------------------------------------------------------------------------
# The write
# --------------------------------------------------------------------------------------------


async def _in_thread_if_big(size: int, function: Callable[..., T], *args: Any) -> T:
    if size <= INLINE_PARSE_MAX_BYTES:
        return function(*args)
    return await asyncio.to_thread(function, *args)


async def parse_body(body: bytes, chosen: BodyFormat, settings: Settings) -> Batch:
    if not body or body.isspace():
        raise _no_readings()
    if chosen is BodyFormat.CSV:
        return await _in_thread_if_big(len(body), CsvBatch, body, settings)
    return await _in_thread_if_big(len(body), parse_json, body, chosen, settings)


async def _prepare(batch: Batch, known: KnownSensors, deleted: frozenset[UUID]) -> PreparedBatch:
    return await _in_thread_if_big(batch.size, batch.prepare, known, deleted)


SensorInserts = list[tuple[UUID, datetime, datetime, int]]  # (sensor, first, last, count)


async def _store(
    connection: Connection, batch: Batch, known: KnownSensors, prepared: PreparedBatch
) -> tuple[PreparedBatch, SensorInserts]:
    """One transaction: the deletion protocol, the rows, sensor_stats. Returns the batch as
    written (rows of sensors deleted meanwhile are rejected) and what was inserted.

    New readings are the rule, so the first try COPYs the batch straight into `readings`.
    A batch that meets a stored (sensor, instant) rolls back and is written again through a
    staging table and INSERT ... ON CONFLICT DO NOTHING. bench/live_writes.py measured the
    staging route at ~1.6x PostgreSQL's time per batch of new readings; a savepoint around
    the COPY would cost two more round trips on every batch."""
    for staged in (False, True):
        try:
            async with connection.transaction():
                await repository.hold_off_sensor_deletion(connection)
                deleted = await repository.deleted_sensor_uuids(connection, prepared.sensor_uuids)
                if deleted:
                    # A sensor deleted since the lookup: its rows are refused, by index.
                    deleted_uuids = frozenset(UUID(bytes=u.bytes) for u in deleted)
                    prepared = await _prepare(batch, known, deleted_uuids)
                    if prepared.accepted == 0:
                        raise prepared.no_valid_readings()
                if staged:
                    rows = await merge_readings(connection, prepared.payload)
                    inserted = [
                        (r["sensor_uuid"], r["first_ts"], r["last_ts"], r["count"]) for r in rows
                    ]
                else:
                    await copy_readings(connection, prepared.payload)
                    inserted = prepared.by_sensor
                await add_to_sensor_stats(connection, inserted)
            return prepared, inserted
        except asyncpg.UniqueViolationError:
            if staged:
                raise
    raise AssertionError("unreachable: the staged route either returns or raises")


async def write_readings(
    resources: Resources,
    *,
    content_type: str | None,
    content_length: str | None,
    body: AsyncIterator[bytes],
) -> LiveWriteResult:
    """Validate and store one batch; committed before this returns."""
    settings = resources.settings
    chosen = body_format(content_type)
    raw = await read_body(body, content_length, settings.live_write_max_bytes)
    instruments.count_bytes(IngestSource.LIVE, len(raw))
    try:
        result = await _write_batch(resources, raw, chosen)
    except NoValidReadings as refused:
        # Nothing was written, but each reading was judged and refused.
        instruments.count_rows(IngestSource.LIVE, rejected=refused.rejected_count)
        raise
    instruments.count_rows(
        IngestSource.LIVE,
        inserted=result.inserted,
        duplicate=result.duplicate,
        rejected=result.rejected_count,
    )
    return result


async def _write_batch(resources: Resources, raw: bytes, chosen: BodyFormat) -> LiveWriteResult:
    settings = resources.settings
    batch = await parse_body(raw, chosen, settings)
    async with resources.metadata_pool.acquire() as connection:
        records = await repository.fetch_writable_sensors(
            connection, batch.lookup_names, batch.lookup_uuids
        )
    known = KnownSensors.of(records)
    prepared = await _prepare(batch, known, frozenset())
    if prepared.accepted == 0:
        raise prepared.no_valid_readings()

    async with resources.timeseries_pool.acquire() as connection:
        await partition_months.ensure(connection, settings.timeseries_database_url, prepared.months)
        prepared, inserted = await _store(connection, batch, known, prepared)
    inserted_count = sum(count for *_, count in inserted)
    return LiveWriteResult(
        inserted=inserted_count,
        duplicate=prepared.duplicate + prepared.accepted - inserted_count,
        rejected=prepared.rejected,
        rejected_count=prepared.rejected_count,
    )
