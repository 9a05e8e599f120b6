"""A bounded load test on loopback: a mix of readings, aggregates, anomalies, CSV streams
and live writes from concurrent clients while a timeseries ingestion runs, against the same
mix with no ingestion, in the same run on the same machine.

    python bench/load.py                                  # 100 requests/s, two 60 s windows
    python bench/load.py --rate 0 --clients 16            # closed loop: the machine saturated
    python bench/load.py --seconds 20 --rows 2000000      # quicker
    python bench/load.py --mix readings=80,aggregate=8,anomalies=2,stream=5,write=5

Setup. A base dataset (--rows, 500 sensors) is generated, uploaded to a SeaweedFS started for
the run and ingested by the service (a real uvicorn process with API keys configured; every
request sends X-API-Key: the read key for GETs, the write key for POSTs). That ingestion,
with nothing else running, gives the idle ingestion rate. A second batch of files, the same
sensors in the months after the base, is generated and uploaded under Later/; its size is
the idle rate x (window + 5 s) x 1.25: under load the job runs slower than alone, and the
margin covers a machine that was busier during the base ingestion than during the window.
Should the job still finish before the window ends, the run says it is not valid; pass a
larger --later-rows.

Load. Requests go out at --rate per second on a fixed schedule over at most --clients
connections (open loop: latency counts from when a request was due), or, with --rate 0,
from --clients closed-loop clients. Each request is picked by --mix weights: a one-day JSON
page of a random sensor (readings), an hourly month of count/min/max/avg/median (aggregate),
GET /anomalies over a month (anomalies), a week streamed as CSV (stream), a POST /readings of
--write-rows new readings after both batches (write). Reads stay within the base dataset.

Windows. After a warm-up, a baseline window runs the mix with no ingestion. Then the job
over Later/ is started and, once it has read rows, the measured window runs the same mix;
the job is polled every second, must have read rows in every slice of the window and still
be running at its end (else the run is not valid), and is cancelled afterwards. Any non-2xx
answer or exception is an error.

RSS is sampled as bench/stack.py does (the uvicorn process and its children, including the
analysis processes). "Bounded" means: over the second half of the measured window, the
service's RSS grows by less than --rss-growth-mb: the median of the last slice (10 s, or a
third of a shorter window) minus the median of the slice that ends at the window's middle.
The first half is left to warm up: once the ingestion runs, the uvicorn process's buffers
and allocator arenas take a few tens of seconds to reach their working size on a busy
machine (one run grew 849 -> 882 MB over the first 30 s, then stayed within 3 MB; the
analysis processes did not change).
A leak that grows with requests or rows keeps growing through the second half; 25 MB in
30 s is about 5 kB per request at 170 requests/s. Medians, not maxima, so that one large
response in flight does not decide. The growth from the first slice is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import aiohttp
import asyncpg
import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.config import ApiKey
from app.devdata import DatasetSpec, Manifest, generate_dataset
from app.devdata.upload import upload_directory
from app.storage.s3 import open_s3_client
from bench.live_writes import CONTENT_TYPES, CpuMeter, Fleet, backend_pids, sensors_of, until_idle
from bench.readings import percentile
from bench.stack import RssSampler, Service, job_seconds, service_stack, wait_for_job

MAX_SECONDS: Final = 60.0
KINDS: Final = ("readings", "aggregate", "anomalies", "stream", "write")
DEFAULT_MIX: Final = "readings=80,aggregate=8,anomalies=2,stream=5,write=5"
TARGET_READINGS_P99_MS: Final = 100.0
LATER_PREFIX: Final = "Later/"
# The later batch must outlast the window at the idle rate: the window, the time the job
# takes to list objects and read its first rows, and a margin for a quieter machine.
LATER_START_SECONDS: Final = 5.0
LATER_MARGIN: Final = 1.25
SLICE_SECONDS: Final = 10.0
POLL_SECONDS: Final = 1.0
REQUEST_TIMEOUT_SECONDS: Final = 30.0
LISTED_ERRORS: Final = 5
MONTH: Final = timedelta(days=30)
WEEK: Final = timedelta(days=7)
DAY: Final = timedelta(days=1)


# --- the mix --------------------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, int]:
    weights: dict[str, int] = {}
    for entry in text.split(","):
        name, _, weight = entry.partition("=")
        if name.strip() not in KINDS or not weight.strip().isdigit():
            raise argparse.ArgumentTypeError(
                f"bad mix entry {entry!r}: expected KIND=WEIGHT, KIND one of {', '.join(KINDS)}"
            )
        weights[name.strip()] = int(weight)
    if not any(weights.values()):
        raise argparse.ArgumentTypeError("the mix has no positive weight")
    return weights


def window_seconds(text: str) -> float:
    seconds = float(text)
    if not 0 < seconds <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"windows last at most {MAX_SECONDS:g} s")
    return seconds


@dataclass
class Workload:
    """What the clients ask for: reads within the base dataset, writes after both batches."""

    sensors: list[str]
    first: datetime  # the base dataset's first reading (UTC)
    days: int  # whole days of base data
    fleet: Fleet
    read_headers: dict[str, str]
    write_headers: dict[str, str]
    slots: itertools.count[int] = field(default_factory=itertools.count)

    def span(self, rng: random.Random, length: timedelta) -> dict[str, str]:
        start = self.first + timedelta(days=rng.randrange(self.days - length.days))
        return {
            "sensor_name": rng.choice(self.sensors),
            "start": start.isoformat(),
            "end": (start + length).isoformat(),
        }


async def issue(
    session: aiohttp.ClientSession, workload: Workload, kind: str, rng: random.Random
) -> tuple[str, str] | None:
    """One request of `kind`; None when it succeeded, else (HTTP status, what was said)."""
    headers = workload.read_headers
    data: bytes | None = None
    method, path = "GET", "/readings"
    if kind == "readings":
        params = workload.span(rng, DAY)
    elif kind == "aggregate":
        path = "/readings/aggregate"
        params = {
            **workload.span(rng, MONTH),
            "interval": "1h",
            "stats": "count,min,max,avg,median",
        }
    elif kind == "anomalies":
        path = "/anomalies"
        params = workload.span(rng, MONTH)
    elif kind == "stream":
        params = {**workload.span(rng, WEEK), "format": "csv"}
    else:
        method, params = "POST", {}
        data = workload.fleet.body(next(workload.slots), "json")
        headers = {**workload.write_headers, "Content-Type": CONTENT_TYPES["json"]}
    async with session.request(method, path, params=params, data=data, headers=headers) as answer:
        body = await answer.read()
        if 200 <= answer.status < 300:
            return None
        said = f"{method} {answer.url} -> {body[:300].decode(errors='replace')}"
        return str(answer.status), said


# --- a window of load -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    kind: str
    at: float  # seconds into the window when it was sent
    ms: float
    error: tuple[str, str] | None  # (HTTP status or exception type, detail)


@dataclass(frozen=True)
class Progress:
    at: float  # seconds into the window
    rows_read: int
    status: str


@dataclass
class Window:
    label: str
    seconds: float = 0.0
    outcomes: list[Outcome] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds into window, bytes)
    rss_peak: int = 0
    rss_by_process: list[tuple[int, int]] = field(default_factory=list)  # (main, children)
    ingestion: list[Progress] = field(default_factory=list)
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    def latencies(self, kind: str, lo: float = 0.0, hi: float = float("inf")) -> list[float]:
        return [o.ms for o in self.outcomes if o.kind == kind and lo <= o.at < hi]

    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]

    def readings_p99(self) -> float:
        latencies = self.latencies("readings")
        return percentile(latencies, 0.99) if latencies else float("nan")

    def slice_seconds(self) -> float:
        return min(SLICE_SECONDS, self.seconds / 3)

    def rss_median(self, lo: float, hi: float) -> float:
        values = [rss for at, rss in self.rss if lo <= at < hi]
        return statistics.median(values) if values else float("nan")

    def rss_growth(self, since: float) -> float:
        """Median RSS of the last slice minus that of the slice ending at `since`, in bytes."""
        width = self.slice_seconds()
        last = self.rss_median(self.seconds - width, self.seconds)
        return last - self.rss_median(since - width, since)

    def middle(self) -> float:
        return max(self.slice_seconds(), self.seconds / 2)

    def ingestion_rate(self, lo: float = 0.0, hi: float = float("inf")) -> float:
        """Rows read per second between the first and last poll within [lo, hi]."""
        polls = [p for p in self.ingestion if lo <= p.at <= hi]
        if len(polls) < 2 or polls[-1].at == polls[0].at:
            return float("nan")
        return (polls[-1].rows_read - polls[0].rows_read) / (polls[-1].at - polls[0].at)


def rss_by_process(pid: int) -> tuple[int, int]:
    """RSS of the service's main process and the sum of its children's."""
    main = psutil.Process(pid)
    children = sum(child.memory_info().rss for child in main.children(recursive=True))
    return main.memory_info().rss, children


async def run_window(
    service: Service,
    workload: Workload,
    args: argparse.Namespace,
    window: Window,
    seconds: float,
    job_id: str | None = None,
) -> Window:
    """The mix for `seconds`, with RSS and CPU measured and, given a job, its progress
    polled. In-flight requests finish after the deadline and count.

    With --rate (the default), requests are sent on a fixed schedule whatever the answers
    take (open loop), over at most --clients connections, and each latency counts from
    when the request was due, so a stall delays the requests behind it and shows in their
    latencies too. With --rate 0, --clients clients each send their next request when the
    last is answered (closed loop): that measures the machine saturated, and its latency
    is mostly the queue that --clients itself makes."""
    kinds = [kind for kind in KINDS if args.mix.get(kind, 0) > 0]
    weights = [args.mix[kind] for kind in kinds]
    began = time.perf_counter()
    deadline = began + seconds

    async def timed(
        session: aiohttp.ClientSession, kind: str, rng: random.Random, due: float
    ) -> None:
        try:
            error = await issue(session, workload, kind, rng)
        except Exception as exc:  # every failure is a result here, not a crash
            error = (type(exc).__name__, str(exc))
        elapsed = time.perf_counter() - due
        window.outcomes.append(Outcome(kind, due - began, elapsed * 1000, error))

    async def client(session: aiohttp.ClientSession, number: int) -> None:
        rng = random.Random(f"{window.label}-{number}")
        while time.perf_counter() < deadline:
            await timed(session, rng.choices(kinds, weights)[0], rng, time.perf_counter())

    async def schedule(session: aiohttp.ClientSession) -> None:
        rng = random.Random(f"{window.label}-schedule")
        sent: list[asyncio.Task[None]] = []
        while (due := began + len(sent) / args.rate) < deadline:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            kind = rng.choices(kinds, weights)[0]
            request_rng = random.Random(f"{window.label}-{len(sent)}")
            sent.append(asyncio.create_task(timed(session, kind, request_rng, due)))
        await asyncio.gather(*sent)

    async def poll(stop: asyncio.Event) -> None:
        while True:
            job = (await service.client.get(f"/ingest/jobs/{job_id}")).json()
            at = time.perf_counter() - began
            window.ingestion.append(Progress(at, job["rows_read"], job["status"]))
            if stop.is_set():
                return
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(
        base_url=str(service.client.base_url),
        connector=aiohttp.TCPConnector(limit=args.clients),
        timeout=timeout,
    ) as session:
        probe = await asyncpg.connect(service.settings.timeseries_database_url)
        postgres = await backend_pids(probe)
        await probe.close()
        pids = [service.process.pid]
        pids += [p.pid for p in psutil.Process(service.process.pid).children(recursive=True)]
        groups = {"service": pids, "PostgreSQL": postgres, "load generator": [psutil.Process().pid]}
        machine_before = psutil.cpu_times()
        stop = asyncio.Event()
        poller = asyncio.create_task(poll(stop)) if job_id else None
        window.rss_by_process.append(rss_by_process(service.process.pid))
        with RssSampler(service.process.pid) as sampler, CpuMeter(groups) as meter:
            if args.rate:
                await schedule(session)
            else:
                await asyncio.gather(*(client(session, n) for n in range(args.clients)))
            window.seconds = time.perf_counter() - began
            window.cpu_seconds = meter.stop()
        window.rss_by_process.append(rss_by_process(service.process.pid))
        machine_after = psutil.cpu_times()
        stop.set()
        if poller is not None:
            await poller  # its last poll is after the last request finished
    busy = (machine_after.user + machine_after.system) - (
        machine_before.user + machine_before.system
    )
    window.cpu_seconds["machine"] = busy
    window.rss = [(at - began, rss) for at, rss in zip(sampler.times, sampler.samples, strict=True)]
    window.rss_peak = sampler.peak
    return window


# --- setup ----------------------------------------------------------------------------------


async def upload_later_batch(service: Service, manifest: Manifest, base: Manifest) -> None:
    """Upload the later batch's data files under LATER_PREFIX (its mapping is the base's)."""
    if (manifest.bucket_dir / "mapping.csv").read_bytes() != (
        base.bucket_dir / "mapping.csv"
    ).read_bytes():
        raise RuntimeError("the later batch's sensors differ from the base's")
    staging = manifest.out_dir / "upload"
    staging.mkdir()
    (manifest.bucket_dir / "Timeseries").rename(staging / LATER_PREFIX.rstrip("/"))
    async with AsyncExitStack() as stack:
        s3 = await open_s3_client(service.settings, stack)
        await upload_directory(s3, service.settings.s3_bucket, staging)


async def start_later_ingestion(service: Service) -> str:
    """Start the job over LATER_PREFIX and return once it has read rows."""
    response = await service.client.post("/ingest/timeseries", json={"prefix": LATER_PREFIX})
    if response.status_code != 202:
        raise RuntimeError(f"POST /ingest/timeseries -> {response.status_code}: {response.text}")
    job_id: str = response.json()["id"]
    while True:
        job = (await service.client.get(f"/ingest/jobs/{job_id}")).json()
        if job["status"] not in ("queued", "running"):
            raise RuntimeError(f"the later ingestion ended before the window: {job}")
        if job["rows_read"] > 0:
            return job_id
        await asyncio.sleep(0.2)


# --- reporting ------------------------------------------------------------------------------


def describe_kinds(window: Window) -> None:
    print(f"{window.label}: {window.seconds:.1f} s, {len(window.outcomes):,} requests")
    print(
        f"  {'kind':<10}{'count':>8}{'req/s':>8}{'errors':>8}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    )
    for kind in KINDS:
        latencies = window.latencies(kind)
        if not latencies:
            continue
        failed = sum(1 for o in window.outcomes if o.kind == kind and o.error is not None)
        print(
            f"  {kind:<10}{len(latencies):>8,}{len(latencies) / window.seconds:>8.1f}{failed:>8}"
            f"{percentile(latencies, 0.50):>9.1f}{percentile(latencies, 0.95):>9.1f}"
            f"{percentile(latencies, 0.99):>9.1f}{max(latencies):>9.1f}"
        )
    cpu = dict(window.cpu_seconds)
    machine = cpu.pop("machine")
    shares = ", ".join(f"{group} {seconds / window.seconds:.2f}" for group, seconds in cpu.items())
    print(
        f"  CPU, cores busy of {psutil.cpu_count()}: {machine / window.seconds:.2f} in all; "
        f"{shares}; other processes {max(0.0, machine - sum(cpu.values())) / window.seconds:.2f}"
    )
    samples = [rss for _, rss in window.rss]
    if samples:
        width = window.slice_seconds()
        (main_before, children_before), (main_after, children_after) = window.rss_by_process
        print(
            f"  service RSS peak {window.rss_peak / 1e6:,.0f} MB, range "
            f"{(max(samples) - min(samples)) / 1e6:,.1f} MB; median of the last {width:.0f} s "
            f"over the first {width:.0f} s {window.rss_growth(width) / 1e6:+,.1f} MB, over the "
            f"{width:.0f} s to the middle {window.rss_growth(window.middle()) / 1e6:+,.1f} MB"
        )
        print(
            f"  start -> end: uvicorn process {main_before / 1e6:,.0f} -> "
            f"{main_after / 1e6:,.0f} MB, its child processes {children_before / 1e6:,.0f} -> "
            f"{children_after / 1e6:,.0f} MB"
        )
    errors = window.errors()
    if errors:
        causes = Counter(f"{o.kind} {o.error[0]}" for o in errors if o.error)
        print(f"  errors: {len(errors)} ({', '.join(f'{c} x{n}' for c, n in causes.items())})")
        for outcome in errors[:LISTED_ERRORS]:
            cause, detail = outcome.error or ("", "")
            print(f"    at {outcome.at:5.1f} s after {outcome.ms:,.0f} ms: {cause} {detail}")


def describe_timeline(window: Window) -> None:
    width = window.slice_seconds()
    print(
        f"  {'seconds':<10}{'req/s':>8}{'errors':>8}{'readings p99':>14}"
        f"{'RSS MB':>9}{'ingest rows/s':>15}"
    )
    lo = 0.0
    while lo < window.seconds - 0.5:
        hi = min(lo + width, window.seconds)
        sent = [o for o in window.outcomes if lo <= o.at < hi]
        readings = window.latencies("readings", lo, hi)
        p99 = f"{percentile(readings, 0.99):.1f}" if readings else "-"
        errors = sum(1 for o in sent if o.error is not None)
        print(
            f"  {f'{lo:.0f}-{hi:.0f}':<10}{len(sent) / (hi - lo):>8.1f}{errors:>8}{p99:>14}"
            f"{window.rss_median(lo, hi) / 1e6:>9,.0f}{window.ingestion_rate(lo, hi):>15,.0f}"
        )
        lo = hi


def verdicts(
    baseline: Window | None, loaded: Window, ingestion_ok: bool, args: argparse.Namespace
) -> bool:
    windows = [w for w in (baseline, loaded) if w is not None]
    errors = sum(len(w.errors()) for w in windows)
    requests = sum(len(w.outcomes) for w in windows)
    p99 = loaded.readings_p99()
    growth_mb = loaded.rss_growth(loaded.middle()) / 1e6
    width = loaded.slice_seconds()
    checks = {
        f"zero errors ({errors} of {requests:,} requests)": errors == 0,
        f"readings p99 {p99:.1f} ms < {TARGET_READINGS_P99_MS:g} ms during ingestion": (
            p99 < TARGET_READINGS_P99_MS
        ),
        f"RSS bounded: second half {growth_mb:+.1f} MB (median of the last {width:.0f} s over "
        f"the {width:.0f} s to the middle) < {args.rss_growth_mb:g} MB "
        f"(peak {loaded.rss_peak / 1e6:,.0f} MB)": (growth_mb < args.rss_growth_mb),
        "ingestion ran (and read rows) throughout the window": ingestion_ok,
    }
    for check, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {check}")
    passed = all(checks.values())
    print("PASS" if passed else "FAIL")
    return passed


# --- the run --------------------------------------------------------------------------------


async def measure(
    service: Service,
    base: Manifest,
    later: Manifest,
    args: argparse.Namespace,
    keys: dict[str, str],
    idle_rate: float,
) -> bool:
    sensors = await sensors_of(service)
    origin = later.last_timestamp_utc + timedelta(days=1)
    fleet = Fleet(
        [name for name, _ in sensors],
        [uuid for _, uuid in sensors],
        datetime(origin.year, origin.month, origin.day, tzinfo=UTC),
        args.write_rows,
    )
    workload = Workload(
        sensors=[name for name, _ in sensors],
        first=base.first_timestamp_utc,
        days=int(base.spec.days),
        fleet=fleet,
        read_headers={"X-API-Key": keys["read"]},
        write_headers={"X-API-Key": keys["write"]},
    )
    mix = ",".join(f"{kind}={weight}" for kind, weight in args.mix.items())
    if args.rate:
        load = f"{args.rate:g} requests/s over at most {args.clients} connections"
    else:
        load = f"{args.clients} closed-loop clients"
    print(
        f"{load}, mix {mix}, {args.seconds:g} s windows, write batches of "
        f"{fleet.ticks * len(fleet.names)} rows, X-API-Key on every request"
    )
    await until_idle(service.process.pid)
    print(f"warm-up {args.warm_up:g} s ...", flush=True)
    await run_window(service, workload, args, Window("warm-up"), args.warm_up)

    baseline = None
    if not args.skip_baseline:
        print(f"baseline window {args.seconds:g} s (no ingestion) ...", flush=True)
        baseline = await run_window(service, workload, args, Window("baseline"), args.seconds)

    job_id = await start_later_ingestion(service)
    print(f"measured window {args.seconds:g} s (ingesting {LATER_PREFIX}) ...", flush=True)
    loaded = await run_window(
        service, workload, args, Window("during ingestion"), args.seconds, job_id
    )
    await service.client.delete(f"/ingest/jobs/{job_id}")
    ended = await wait_for_job(service.client, job_id)

    polls = loaded.ingestion
    width = loaded.slice_seconds()
    slices = [
        loaded.ingestion_rate(lo, lo + width)
        for lo in (width * n for n in range(int(loaded.seconds // width)))
    ]
    ingestion_ok = (
        len(polls) >= 2
        and polls[-1].status == "running"
        and polls[-1].at >= loaded.seconds
        and all(rate > 0 for rate in slices)
    )

    print()
    if baseline is not None:
        describe_kinds(baseline)
    describe_kinds(loaded)
    describe_timeline(loaded)
    rate = loaded.ingestion_rate()
    print(
        f"ingestion during the window: {polls[-1].rows_read - polls[0].rows_read:,} rows, "
        f"{rate:,.0f} rows/s ({rate / idle_rate:.2f}x of its {idle_rate:,.0f} rows/s "
        f"with no requests); status at the end: {polls[-1].status}; then {ended['status']} "
        f"after {ended['rows_read']:,} of {later.rows_written:,} rows"
    )
    if polls[-1].status != "running":
        print("the ingestion finished before the window ended: the run is not valid; pass a")
        print(f"larger --later-rows than {later.rows_written:,}")
    if baseline is not None:
        for stat, fraction in (("p50", 0.5), ("p99", 0.99)):
            during = percentile(loaded.latencies("readings"), fraction)
            before = percentile(baseline.latencies("readings"), fraction)
            print(
                f"readings {stat} during ingestion {during:.1f} ms, baseline {before:.1f} ms: "
                f"{during / before:.2f}x"
            )
    return verdicts(baseline, loaded, ingestion_ok, args)


async def run(args: argparse.Namespace) -> bool:
    run_id = secrets.token_hex(3)
    work = Path(tempfile.mkdtemp(prefix="bench-load-", dir=args.dir))
    # A key per scope for the clients, as a deployment would hand them out, and a bare one
    # (both scopes) for the stack's own calls.
    keys = {scope: secrets.token_urlsafe(24) for scope in ("read", "write", "stack")}
    api_keys = (
        ApiKey.parse(keys["stack"]),
        ApiKey.parse(f"read:{keys['read']}"),
        ApiKey.parse(f"write:{keys['write']}"),
    )
    began = time.perf_counter()
    try:
        print(f"generating the base dataset, {args.rows:,} rows ...", flush=True)
        spec = DatasetSpec.from_rows(args.rows)
        if spec.days < MONTH.days + 2:
            raise SystemExit(f"--rows {args.rows:,} gives {spec.days:.0f} days; months need more")
        base = generate_dataset(spec, work / "base")
        async with service_stack(base, work, run_id, api_keys=api_keys) as service:
            print("ingesting the base dataset ...", flush=True)
            started = (await service.client.post("/ingest/timeseries")).json()
            job = await wait_for_job(service.client, started["id"], show=True)
            assert job["status"] == "succeeded", job
            idle_rate = job["rows_read"] / job_seconds(job)
            later_rows = args.later_rows or int(
                idle_rate * (args.seconds + LATER_START_SECONDS) * LATER_MARGIN
            )
            print(
                f"base: {base.rows_written:,} rows, {spec.sensors} sensors, {spec.days:.0f} days,"
                f" ingested at {idle_rate:,.0f} rows/s with no requests"
            )
            print(f"generating and uploading the later batch, {later_rows:,} rows ...", flush=True)
            later_spec = DatasetSpec.from_rows(later_rows, sensors=spec.sensors, start=spec.end)
            later = generate_dataset(later_spec, work / "later")
            await upload_later_batch(service, later, base)
            print(
                f"later batch: {later.rows_written:,} rows in {len(later.files)} objects "
                f"({later.bytes_written / 1e6:,.0f} MB); setup took "
                f"{time.perf_counter() - began:.0f} s"
            )
            passed = await measure(service, base, later, args, keys, idle_rate)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wall time {time.perf_counter() - began:.0f} s, setup and teardown included")
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=window_seconds, default=MAX_SECONDS, help="per window")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="requests/s on a fixed schedule; 0: closed loop"
    )
    parser.add_argument(
        "--clients", type=int, default=16, help="connections (closed loop: clients)"
    )
    parser.add_argument("--mix", type=parse_mix, default=parse_mix(DEFAULT_MIX))
    parser.add_argument("--rows", type=int, default=5_000_000, help="base dataset")
    parser.add_argument(
        "--later-rows", type=int, default=0, help="later batch (default: sized from the rate)"
    )
    parser.add_argument("--write-rows", type=int, default=500, help="rows per POST /readings")
    parser.add_argument("--warm-up", type=float, default=5.0, help="seconds, not measured")
    parser.add_argument("--rss-growth-mb", type=float, default=25.0)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the scratch directory")
    passed = asyncio.run(run(parser.parse_args()))
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
