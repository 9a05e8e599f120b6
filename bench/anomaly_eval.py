"""Anomaly detection accuracy and speed through the API, against planted ground truth.

The anomalies the dataset generator plants are the ground truth; a plain 3-sigma baseline is
scored the same way in the same run.

    python bench/anomaly_eval.py                      # full preset: 500 sensors x 3 years
    python bench/anomaly_eval.py --rows 2000000       # quicker (500 sensors x ~42 days)
    python bench/anomaly_eval.py --skip-scan          # without the fleet scan
    python bench/anomaly_eval.py --plots bench/figures  # also save example plots

Accuracy. Every sensor is analysed (so false positives on clean sensors count) by
GET /anomalies over the whole dataset span with default parameters. The baseline reads the
same sensor's readings (GET /readings?format=csv) and flags |value - mean| > 3 x std over the
whole range (population std); flagged readings at most 2 positions apart form one window, a
"spike" if the mean of its flagged readings is above the sensor's mean, else a "dip"; it
reports no change points.

Scoring, identical for both methods:

* Each planted event has an extent (UTC, inclusive): spike, dip, flatline and noise_burst
  [start - 30 min, end + 30 min] (reading times are jittered); level_shift
  [start - 1 day, start + 1 day]; slope_change [start - 30 days, start + 30 days], because a
  slow slope cannot be dated precisely (the bend is invisible for days). On a dataset
  shorter than a few months that extent covers most of the span, so slope_change scores are
  lenient there.
* Detections are every reported window [start, end] and every change point (an instant).
* An event is found if any detection on its sensor overlaps its extent, whatever the
  detection's kind. recall_K = events of kind K found / events of kind K planted.
* A detection is a true positive if it overlaps the extent of any planted event on its
  sensor (of any kind), else a false positive. Precision is per method, over all its
  detections: P = TP / (TP + FP). It is not split by kind: the baseline has no kinds, and a
  detection's claimed kind is not what makes it right or wrong. The false positives are
  listed by the kind they claim, to show what to improve.
* Per kind: recall_K as above and F1_K = 2 P recall_K / (P + recall_K), 0 when undefined,
  so that a kind's score carries the false alarms a user pays to find it.
* Overall: the same with all events: F1 = 2 P R / (P + R), R = found / planted.
* A level shift or slope change starting less than MIN_DATA_AFTER_ONSET before the end of
  the data is not scored (listed as excluded): nothing can tell it from noise yet. The
  generator may plant them as late as 3 hours before the end.
* Targets: overall F1 >= 0.9, every kind's F1 >= 0.8, and our F1 above the baseline's on
  every kind.

Speed. One sensor's full history: the latencies of the accuracy requests above (2 at a
time), target p95 < 1 s. One month: 20 requests over a random 30-day window of a random
sensor, one at a time, target p95 < 200 ms. Fleet scan: POST /anomalies/scan over every
sensor, target < 300 s, while a probe issues GET /readings (a 1-day window) and GET /healthz
every 0.5 s to see how responsive the API stays.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp
import numpy as np
import numpy.typing as npt
import pandas as pd

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.devdata import (
    ANOMALY_KINDS,
    PRESET_ROWS,
    AnomalyEvent,
    AnomalyKind,
    DatasetSpec,
    generate_dataset,
)
from bench.readings import percentile
from bench.stack import Service, service_stack, wait_for_job

FloatArray = npt.NDArray[np.float64]
T = TypeVar("T")
R = TypeVar("R")

EXTENT_MARGIN: Final[dict[AnomalyKind, timedelta]] = {
    "spike": timedelta(minutes=30),
    "dip": timedelta(minutes=30),
    "flatline": timedelta(minutes=30),
    "noise_burst": timedelta(minutes=30),
    "level_shift": timedelta(days=1),
    "slope_change": timedelta(days=30),
}
# Persistent events last to the end of the data; only their onset can be matched.
ONSET_ONLY: Final[frozenset[AnomalyKind]] = frozenset({"level_shift", "slope_change"})
MIN_DATA_AFTER_ONSET: Final = timedelta(days=2)
WINDOW_CLAIMS: Final[dict[str, AnomalyKind]] = {
    "spike": "spike",
    "dip": "dip",
    "noise": "noise_burst",
    "flatline": "flatline",
    "excursion_up": "level_shift",
    "excursion_down": "level_shift",
}
CHANGE_POINT_CLAIMS: Final[dict[str, AnomalyKind]] = {
    "level_shift": "level_shift",
    "slope_change": "slope_change",
}
BASELINE_SIGMAS: Final = 3.0
# Same as the service's MERGE_GAP, so both methods group flagged readings alike.
BASELINE_MERGE_GAP: Final = 2

ANALYSIS_CLIENTS: Final = 2
MONTH_REQUESTS: Final = 20
MONTH: Final = timedelta(days=30)
PROBE_INTERVAL_SECONDS: Final = 0.5
SCAN_POLL_SECONDS: Final = 1.0
LISTED_LINES: Final = 20

TARGET_OVERALL_F1: Final = 0.9
TARGET_KIND_F1: Final = 0.8
TARGET_FULL_HISTORY_MS: Final = 1000.0
TARGET_MONTH_MS: Final = 200.0
TARGET_SCAN_SECONDS: Final = 300.0


# --- scoring (pure) -------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    sensor: str
    start: datetime
    end: datetime
    label: str  # as reported, e.g. "excursion_up" or "level_shift change point"
    claim: AnomalyKind  # the event kind the label stands for


def harmonic(precision: float | None, recall: float | None) -> float:
    if precision is None or recall is None or precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass
class KindScore:
    planted: int = 0
    found: int = 0

    @property
    def recall(self) -> float | None:
        return self.found / self.planted if self.planted else None


@dataclass
class Score:
    kinds: dict[AnomalyKind, KindScore]
    missed: list[AnomalyEvent]
    true_positives: int = 0
    false_positives: int = 0
    # (claimed kind, label) of every unmatched detection.
    false_positive_claims: Counter[tuple[AnomalyKind, str]] = field(default_factory=Counter)
    ambiguous: int = 0  # detections overlapping the extents of several events

    @property
    def precision(self) -> float | None:
        detections = self.true_positives + self.false_positives
        return self.true_positives / detections if detections else None

    @property
    def recall(self) -> float | None:
        planted = sum(kind.planted for kind in self.kinds.values())
        found = sum(kind.found for kind in self.kinds.values())
        return found / planted if planted else None

    @property
    def f1(self) -> float:
        return harmonic(self.precision, self.recall)

    def kind_f1(self, kind: AnomalyKind) -> float:
        return harmonic(self.precision, self.kinds[kind].recall)

    def weakest(self) -> tuple[AnomalyKind, float]:
        kind = min(self.kinds, key=self.kind_f1)
        return kind, self.kind_f1(kind)


def scoreable(event: AnomalyEvent, last_reading: datetime) -> bool:
    return event.kind not in ONSET_ONLY or last_reading - event.start >= MIN_DATA_AFTER_ONSET


def extent(event: AnomalyEvent) -> tuple[datetime, datetime]:
    margin = EXTENT_MARGIN[event.kind]
    end = event.start if event.kind in ONSET_ONLY else event.end
    return event.start - margin, end + margin


def overlaps(detection: Detection, span: tuple[datetime, datetime]) -> bool:
    return detection.start <= span[1] and detection.end >= span[0]


def score(events: Sequence[AnomalyEvent], detections: Sequence[Detection]) -> Score:
    """Recall, precision and their failures of `detections` against planted `events`."""
    by_sensor: dict[str, list[tuple[int, AnomalyEvent, tuple[datetime, datetime]]]] = {}
    for number, event in sorted(enumerate(events), key=lambda item: item[1].start):
        by_sensor.setdefault(event.sensor_name, []).append((number, event, extent(event)))
    result = Score(kinds={kind: KindScore() for kind in ANOMALY_KINDS}, missed=[])
    for event in events:
        result.kinds[event.kind].planted += 1
    found: set[int] = set()
    for detection in detections:
        matched = [
            (number, event)
            for number, event, span in by_sensor.get(detection.sensor, [])
            if overlaps(detection, span)
        ]
        if not matched:
            result.false_positives += 1
            result.false_positive_claims[(detection.claim, detection.label)] += 1
            continue
        result.true_positives += 1
        result.ambiguous += len(matched) > 1
        found.update(number for number, _ in matched)
    for number, event in enumerate(events):
        if number in found:
            result.kinds[event.kind].found += 1
        else:
            result.missed.append(event)
    return result


# --- detections from the API, and the baseline (pure) ---------------------------------------


def service_detections(sensor: str, result: dict[str, Any]) -> list[Detection]:
    """Windows and change points of one GET /anomalies response."""
    detections = []
    for window in result["windows"]:
        if window["kind"] not in WINDOW_CLAIMS:
            raise ValueError(f"{sensor}: unknown window kind {window['kind']!r}")
        detections.append(
            Detection(
                sensor=sensor,
                start=datetime.fromisoformat(window["start"]),
                end=datetime.fromisoformat(window["end"]),
                label=window["kind"],
                claim=WINDOW_CLAIMS[window["kind"]],
            )
        )
    for point in result["change_points"]:
        if point["kind"] not in CHANGE_POINT_CLAIMS:
            raise ValueError(f"{sensor}: unknown change point kind {point['kind']!r}")
        moment = datetime.fromisoformat(point["timestamp"])
        detections.append(
            Detection(
                sensor=sensor,
                start=moment,
                end=moment,
                label=f"{point['kind']} change point",
                claim=CHANGE_POINT_CLAIMS[point["kind"]],
            )
        )
    return detections


def three_sigma_windows(values: FloatArray) -> list[tuple[int, int, AnomalyKind]]:
    """[first, last] positions and kind of each window of the global 3-sigma rule."""
    mean, std = float(values.mean()), float(values.std())
    flagged = np.flatnonzero(np.abs(values - mean) > BASELINE_SIGMAS * std)
    if flagged.size == 0:
        return []
    splits = np.flatnonzero(np.diff(flagged) > BASELINE_MERGE_GAP) + 1
    windows: list[tuple[int, int, AnomalyKind]] = []
    for group in np.split(flagged, splits):
        kind: AnomalyKind = "spike" if float(values[group].mean()) > mean else "dip"
        windows.append((int(group[0]), int(group[-1]), kind))
    return windows


def baseline_detections(
    sensor: str, timestamps: Sequence[str], values: FloatArray
) -> list[Detection]:
    return [
        Detection(
            sensor=sensor,
            start=datetime.fromisoformat(timestamps[first]),
            end=datetime.fromisoformat(timestamps[last]),
            label=kind,
            claim=kind,
        )
        for first, last, kind in three_sigma_windows(values)
    ]


# --- talking to the service ----------------------------------------------------------------


class ApiError(RuntimeError):
    pass


async def fetch(
    session: aiohttp.ClientSession, path: str, params: dict[str, str]
) -> tuple[bytes, float]:
    """The body of a successful GET and its latency in ms (until the body is read)."""
    started = time.perf_counter()
    async with session.get(path, params=params) as response:
        body = await response.read()
        if response.status != 200:
            raise ApiError(
                f"GET {response.url} -> {response.status}: {body[:2000].decode(errors='replace')}"
            )
    return body, (time.perf_counter() - started) * 1000


async def for_each(
    items: Sequence[T], clients: int, call: Callable[[T], Awaitable[R]], label: str
) -> list[R]:
    """call(item) for every item, `clients` at a time, results in item order."""
    results: dict[int, R] = {}
    counter = iter(range(len(items)))

    async def client() -> None:
        for number in counter:
            results[number] = await call(items[number])
            if len(results) % 25 == 0 or len(results) == len(items):
                print(f"\r  {label}: {len(results)}/{len(items)} sensors", end="", flush=True)

    await asyncio.gather(*(client() for _ in range(clients)))
    print()
    return [results[number] for number in range(len(items))]


async def list_sensors(service: Service) -> list[str]:
    names: list[str] = []
    cursor = None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = (await service.client.get("/sensors", params=params)).json()
        names += [sensor["name"] for sensor in page["items"]]
        if not page["has_more"]:
            return names
        cursor = page["next_cursor"]


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime  # exclusive

    def params(self, sensor: str) -> dict[str, str]:
        return {"sensor_name": sensor, "start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass
class Analysis:
    detections: list[Detection]
    latency_ms: float
    points: int
    truncated: bool


async def analyse(session: aiohttp.ClientSession, sensor: str, span: Span) -> Analysis:
    body, latency_ms = await fetch(session, "/anomalies", span.params(sensor))
    result = json.loads(body)
    return Analysis(
        detections=service_detections(sensor, result),
        latency_ms=latency_ms,
        points=int(result["summary"]["points"]),
        truncated=bool(result["truncated"]),
    )


async def baseline(session: aiohttp.ClientSession, sensor: str, span: Span) -> list[Detection]:
    body, _ = await fetch(session, "/readings", {**span.params(sensor), "format": "csv"})
    frame = pd.read_csv(io.BytesIO(body), dtype={"timestamp": str, "value": float})
    if frame.empty:
        return []
    timestamps: list[str] = frame["timestamp"].tolist()
    return baseline_detections(sensor, timestamps, frame["value"].to_numpy(dtype=np.float64))


# --- reporting ------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    return f"{'-':<5}" if value is None else f"{value:.3f}"


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def print_accuracy(ours: Score, base: Score) -> None:
    print()
    print(f"{'':<24}{'ours':<16}3-sigma baseline")
    print(f"{'kind':<14}{'planted':>7}   {'R      F1':<16}R      F1")
    for kind in ANOMALY_KINDS:
        print(
            f"{kind:<14}{ours.kinds[kind].planted:>7}   "
            f"{fmt(ours.kinds[kind].recall)}  {fmt(ours.kind_f1(kind))}   "
            f"{fmt(base.kinds[kind].recall)}  {fmt(base.kind_f1(kind))}"
        )
    for name, method in (("ours", ours), ("3-sigma", base)):
        print(
            f"overall {name:<8} P {fmt(method.precision)}  R {fmt(method.recall)}  "
            f"F1 {fmt(method.f1)}  ({method.true_positives:,} true, "
            f"{method.false_positives:,} false detections)"
        )
    weakest, weakest_f1 = ours.weakest()
    behind = [
        f"{k} {ours.kind_f1(k):.3f} vs {base.kind_f1(k):.3f}"
        for k in ANOMALY_KINDS
        if not ours.kind_f1(k) > base.kind_f1(k)
    ]
    beaten = len(ANOMALY_KINDS) - len(behind)
    targets = [
        (f"overall F1 >= {TARGET_OVERALL_F1}", f"{ours.f1:.3f}", ours.f1 >= TARGET_OVERALL_F1),
        (
            f"every kind F1 >= {TARGET_KIND_F1}",
            f"min {weakest_f1:.3f} ({weakest})",
            weakest_f1 >= TARGET_KIND_F1,
        ),
        (
            "ours > 3-sigma F1, every kind",
            f"{beaten}/{len(ANOMALY_KINDS)}" + (f" (not: {'; '.join(behind)})" if behind else ""),
            not behind,
        ),
    ]
    for label, value, passed in targets:
        print(f"target {label:<30} {verdict(passed)}  {value}")


def print_failures(ours: Score) -> None:
    print(f"\nmissed by ours: {len(ours.missed)}")
    for event in ours.missed[:LISTED_LINES]:
        print(
            f"  {event.sensor_name}  {event.kind:<13} {event.start:%Y-%m-%d %H:%M}Z  "
            f"magnitude {event.magnitude:.4g}"
        )
    if len(ours.missed) > LISTED_LINES:
        print(f"  ... and {len(ours.missed) - LISTED_LINES} more")
    print(f"false-positive detections of ours by claimed kind: {ours.false_positives}")
    for kind in ANOMALY_KINDS:
        labels = {
            label: n for (claim, label), n in ours.false_positive_claims.items() if claim == kind
        }
        if labels:
            detail = ", ".join(f"{label} {n}" for label, n in sorted(labels.items()))
            print(f"  {kind:<13} {sum(labels.values()):>6}  ({detail})")
    if ours.ambiguous:
        print(
            f"  ({ours.ambiguous} detections overlapped several events' extents; each counted "
            "once, for the earliest-starting event)"
        )


def describe_ms(latencies: list[float]) -> str:
    return (
        f"p50 {statistics.median(latencies):7.1f} ms  p95 {percentile(latencies, 0.95):7.1f} ms"
        f"  max {max(latencies):7.1f} ms"
    )


# --- speed ----------------------------------------------------------------------------------


async def month_latencies(
    session: aiohttp.ClientSession, sensors: list[str], span: Span, rng: random.Random
) -> list[float]:
    room = max(0.0, (span.end - span.start - MONTH).total_seconds())
    latencies = []
    for _ in range(MONTH_REQUESTS):
        start = span.start + timedelta(seconds=rng.uniform(0, room))
        window = Span(start, min(span.end, start + MONTH))
        _, latency_ms = await fetch(session, "/anomalies", window.params(rng.choice(sensors)))
        latencies.append(latency_ms)
    return latencies


async def probe(
    session: aiohttp.ClientSession,
    sensors: list[str],
    span: Span,
    rng: random.Random,
    stop: asyncio.Event,
) -> tuple[list[float], list[float]]:
    """Latencies of a 1-day GET /readings and of GET /healthz, every PROBE_INTERVAL."""
    readings: list[float] = []
    health: list[float] = []
    room = max(0.0, (span.end - span.start - timedelta(days=1)).total_seconds())
    while not stop.is_set():
        tick = time.perf_counter()
        start = span.start + timedelta(seconds=rng.uniform(0, room))
        day = Span(start, start + timedelta(days=1)).params(rng.choice(sensors))
        (_, readings_ms), (_, health_ms) = await asyncio.gather(
            fetch(session, "/readings", day), fetch(session, "/healthz", {})
        )
        readings.append(readings_ms)
        health.append(health_ms)
        remaining = PROBE_INTERVAL_SECONDS - (time.perf_counter() - tick)
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), remaining)
    return readings, health


@dataclass
class ScanOutcome:
    seconds: float
    status: str


async def fleet_scan(
    service: Service,
    session: aiohttp.ClientSession,
    sensors: list[str],
    span: Span,
    rng: random.Random,
) -> ScanOutcome:
    started = time.perf_counter()
    response = await service.client.post("/anomalies/scan")
    if response.status_code != 202:
        raise ApiError(f"POST /anomalies/scan -> {response.status_code}: {response.text}")
    job: dict[str, Any] = response.json()
    stop = asyncio.Event()
    prober = asyncio.create_task(probe(session, sensors, span, rng, stop))
    try:
        while job["status"] in ("queued", "running"):
            await asyncio.sleep(SCAN_POLL_SECONDS)
            job = (await service.client.get(f"/anomalies/scan/{job['id']}")).json()
            print(
                f"\r  scan: {job['objects_done']}/{job['objects_total']} sensors  "
                f"{job['rows_read']:,} readings",
                end="",
                flush=True,
            )
        print()
    finally:
        stop.set()
        readings_ms, health_ms = await prober
    wall = time.perf_counter() - started
    seconds = wall
    if job["started_at"] and job["finished_at"]:
        seconds = (
            datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])
        ).total_seconds()
    rate = job["rows_read"] / seconds if seconds > 0 else 0.0
    print(
        f"fleet scan          {seconds:.1f} s (job; {wall:.1f} s wall incl. polling): "
        f"{job['objects_done']}/{job['objects_total']} sensors, {job['rows_read']:,} readings, "
        f"{rate:,.0f} readings/s, {job['status']}  "
        f"target < {TARGET_SCAN_SECONDS:.0f} s "
        f"{verdict(seconds < TARGET_SCAN_SECONDS and job['status'] == 'succeeded')}"
    )
    for error in job["errors"][:5]:
        print(f"  error: {error}")
    if job["failure_reason"]:
        print(f"  failure: {job['failure_reason']}")
    if readings_ms:
        print(
            f"during the scan     GET /readings (1 day) p50 {statistics.median(readings_ms):.1f} "
            f"ms max {max(readings_ms):.1f} ms; GET /healthz p50 "
            f"{statistics.median(health_ms):.1f} ms max {max(health_ms):.1f} ms "
            f"({len(readings_ms)} probes)"
        )
    report = await service.client.get("/anomalies/report", params={"limit": 5})
    if report.status_code != 200:
        raise ApiError(f"GET /anomalies/report -> {report.status_code}: {report.text}")
    print("top 5 of the scan report (rank, sensor, windows, max score):")
    for item in report.json()["items"]:
        print(
            f"  {item['rank']:>2}  {item['sensor_name']}  {item['window_count']:>5}  "
            f"{item['max_score']:.1f}"
        )
    return ScanOutcome(seconds, str(job["status"]))


# --- plots ----------------------------------------------------------------------------------


async def save_plots(
    service: Service, events: Sequence[AnomalyEvent], span: Span, directory: Path
) -> None:
    """GET /anomalies/plot around the first planted event of each kind, and over the whole
    span for the sensor with the most events: the pictures SOLUTION.md shows."""
    requests: list[tuple[str, str, datetime, datetime]] = []
    for kind in ANOMALY_KINDS:
        event = min(
            (e for e in events if e.kind == kind), key=lambda e: e.sensor_name, default=None
        )
        if event is None:
            continue
        around = timedelta(days=20 if kind in ONSET_ONLY else 3)
        start = max(span.start, event.start - around)
        end = min(span.end, event.end + around if kind not in ONSET_ONLY else event.start + around)
        requests.append((f"{kind}_{event.sensor_name}", event.sensor_name, start, end))
    busiest = Counter(e.sensor_name for e in events).most_common(1)
    pictures: dict[str, bytes] = {}
    if busiest:
        name = busiest[0][0]
        requests.append((f"whole_span_{name}", name, span.start, span.end))
    for label, sensor, start, end in requests:
        params = {"sensor_name": sensor, "start": start.isoformat(), "end": end.isoformat()}
        response = await service.client.get("/anomalies/plot", params=params)
        if response.status_code != 200:
            raise ApiError(f"GET /anomalies/plot {params} -> {response.status_code}")
        pictures[f"{label}.png"] = response.content
    await asyncio.to_thread(write_files, directory, pictures)
    print(f"plots: {len(pictures)} PNGs in {directory}")


def write_files(directory: Path, files: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_bytes(content)


# --- the run --------------------------------------------------------------------------------


async def ingest(service: Service) -> None:
    print("ingesting ...", flush=True)
    job = (await service.client.post("/ingest/timeseries")).json()
    job = await wait_for_job(service.client, job["id"], show=True)
    assert job["status"] == "succeeded", job


def dataset_span(spec: DatasetSpec, first: datetime, last: datetime) -> Span:
    # Timestamps have minute resolution, so a minute past the last reading includes it.
    return Span(min(spec.start, first), max(spec.end, last + timedelta(minutes=1)))


async def accuracy(
    session: aiohttp.ClientSession, sensors: list[str], events: Sequence[AnomalyEvent], span: Span
) -> tuple[Score, Score, list[Analysis]]:
    print(f"analysing {len(sensors)} sensors over {span.start} .. {span.end} ...")
    analyses = await for_each(
        sensors, ANALYSIS_CLIENTS, lambda name: analyse(session, name, span), "ours"
    )
    baselines = await for_each(
        sensors, ANALYSIS_CLIENTS, lambda name: baseline(session, name, span), "3-sigma"
    )
    ours = score(events, [d for a in analyses for d in a.detections])
    base = score(events, [d for detections in baselines for d in detections])
    print(
        f"detections: ours {sum(len(a.detections) for a in analyses):,}, "
        f"3-sigma {sum(len(b) for b in baselines):,}"
    )
    truncated = [name for name, a in zip(sensors, analyses, strict=True) if a.truncated]
    if truncated:
        print(
            f"warning: {len(truncated)} sensors had more than 1000 windows (truncated), "
            f"e.g. {truncated[0]}; their unlisted windows are not scored"
        )
    print_accuracy(ours, base)
    print_failures(ours)
    return ours, base, analyses


def full_history_speed(analyses: list[Analysis]) -> float:
    """p95 (ms) of the accuracy requests, each one sensor's full history."""
    latencies = [a.latency_ms for a in analyses]
    points = statistics.median(a.points for a in analyses)
    p95 = percentile(latencies, 0.95)
    print(
        f"full history        {describe_ms(latencies)}  ({points:,.0f} readings median, "
        f"{ANALYSIS_CLIENTS} at a time)  target p95 < {TARGET_FULL_HISTORY_MS:.0f} ms "
        f"{verdict(p95 < TARGET_FULL_HISTORY_MS)}"
    )
    return p95


async def month_speed(
    session: aiohttp.ClientSession, sensors: list[str], span: Span, rng: random.Random
) -> float:
    latencies = await month_latencies(session, sensors, span, rng)
    p95 = percentile(latencies, 0.95)
    print(
        f"one month           {describe_ms(latencies)}  ({MONTH_REQUESTS} requests, one at a "
        f"time)  target p95 < {TARGET_MONTH_MS:.0f} ms {verdict(p95 < TARGET_MONTH_MS)}"
    )
    return p95


async def evaluate(
    service: Service,
    events: Sequence[AnomalyEvent],
    span: Span,
    skip_scan: bool,
    plots: Path | None,
) -> None:
    sensors = await list_sensors(service)
    rng = random.Random(7)
    # aiohttp, not httpx, for the measured requests: its client costs a fraction of httpx's
    # CPU per request, and the client shares this machine's two cores with the service.
    async with aiohttp.ClientSession(
        base_url=str(service.client.base_url),
        headers=service.headers,
        connector=aiohttp.TCPConnector(limit=16),
        timeout=aiohttp.ClientTimeout(total=600),
    ) as session:
        ours, base, analyses = await accuracy(session, sensors, events, span)
        print()
        full_p95 = full_history_speed(analyses)
        month_p95 = await month_speed(session, sensors, span, rng)
        scan = None if skip_scan else await fleet_scan(service, session, sensors, span, rng)
    if plots is not None:
        await save_plots(service, events, span, plots)
    weakest, weakest_f1 = ours.weakest()
    print(
        f"\nheadline: F1 {ours.f1:.3f} (3-sigma {base.f1:.3f}), "
        f"min kind F1 {weakest_f1:.3f} ({weakest}), full-history p95 {full_p95:.0f} ms, "
        f"month p95 {month_p95:.0f} ms, "
        f"scan {'skipped' if scan is None else f'{scan.seconds:.1f} s ({scan.status})'}"
    )


async def run(args: argparse.Namespace) -> None:
    run_id = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix="bench-anomalies-", dir=args.dir))
    try:
        spec = DatasetSpec.from_rows(args.rows, events_per_kind=args.events_per_kind)
        print(f"generating {args.rows:,} rows ...", flush=True)
        manifest = generate_dataset(spec, work / "dataset")
        events = [e for e in manifest.events if scoreable(e, manifest.last_timestamp_utc)]
        for event in manifest.events:
            if event not in events:
                print(
                    f"excluded: {event.sensor_name} {event.kind} at {event.start:%Y-%m-%d %H:%M}Z"
                    f", less than {MIN_DATA_AFTER_ONSET.days} days before the end of the data"
                )
        kinds = Counter(event.kind for event in events)
        print(
            f"{manifest.rows_written:,} rows, {spec.sensors} sensors, {spec.days:.1f} days; "
            f"{len(events)} planted events "
            f"({', '.join(f'{kinds[k]} {k}' for k in ANOMALY_KINDS)}) "
            f"on {len({e.sensor_name for e in events})} distinct sensors"
        )
        span = dataset_span(spec, manifest.first_timestamp_utc, manifest.last_timestamp_utc)
        async with service_stack(manifest, work, run_id) as service:
            await ingest(service)
            await evaluate(service, events, span, args.skip_scan, args.plots)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=PRESET_ROWS["full"], help="dataset size (default: full)"
    )
    parser.add_argument(
        "--events-per-kind", type=int, default=20, help="anomalies planted of each kind"
    )
    parser.add_argument("--dir", type=Path, default=None, help="parent of the scratch directory")
    parser.add_argument("--skip-scan", action="store_true", help="no fleet scan")
    parser.add_argument(
        "--plots", type=Path, default=None, help="save example GET /anomalies/plot PNGs here"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
