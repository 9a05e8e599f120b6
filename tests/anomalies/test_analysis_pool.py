"""The analysis process pool's bounds, with real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from app.anomalies.analysis_pool import AnalysisPool
from app.anomalies.exceptions import AnalysisBusy, AnalysisTimedOut
from app.core.config import REPOSITORY_ROOT


async def test_work_runs_in_another_process() -> None:
    pool = AnalysisPool(1, max_pending=2, timeout_seconds=30)
    try:
        assert await pool.run(os.getpid) != os.getpid()
    finally:
        await pool.close()


async def test_more_pending_requests_than_allowed_get_busy() -> None:
    pool = AnalysisPool(1, max_pending=1, timeout_seconds=30)
    try:
        first = asyncio.create_task(pool.run(time.sleep, 1.0))
        await asyncio.sleep(0.05)
        with pytest.raises(AnalysisBusy):
            await pool.run(time.sleep, 0)
        await first
        await pool.run(time.sleep, 0)  # free again
    finally:
        await pool.close()


async def test_a_slow_analysis_times_out_and_frees_its_process_when_done() -> None:
    pool = AnalysisPool(1, max_pending=4, timeout_seconds=0.5)
    try:
        await pool.run(time.sleep, 0)  # the process is up: the timeout measures work only
        with pytest.raises(AnalysisTimedOut):
            await pool.run(time.sleep, 1.5)
        # The process is still busy with the timed-out call; the next request waits for it
        # within its own timeout rather than piling up behind it.
        with pytest.raises(AnalysisTimedOut):
            await pool.run(time.sleep, 0)
        await asyncio.sleep(1.2)
        await pool.run(time.sleep, 0)
    finally:
        await pool.close()


async def test_a_scan_leaves_a_process_to_requests() -> None:
    pool = AnalysisPool(2, max_pending=4, timeout_seconds=30)
    try:
        assert pool.scan_slots._value == 1
        await asyncio.gather(pool.run(time.sleep, 0.2), pool.run(time.sleep, 0.2))  # spawn both
        scan = [asyncio.create_task(pool.run_for_scan(time.sleep, 5)) for _ in range(2)]
        await asyncio.sleep(0.1)
        await pool.run(os.getpid)
        # One scan task holds one process, the other waits for a scan slot, not a process:
        # the request was served while both scan tasks were still pending.
        assert not any(task.done() for task in scan)
        await asyncio.gather(*scan)
    finally:
        await pool.close()


async def test_workers_exit_when_the_service_process_is_killed(tmp_path: Path) -> None:
    # A service process killed with SIGKILL gets no shutdown: its analysis processes must
    # notice on their own.
    script = (
        "import asyncio, os\n"
        "from app.anomalies.analysis_pool import AnalysisPool\n"
        "async def main():\n"
        "    pool = AnalysisPool(2, max_pending=4, timeout_seconds=30)\n"
        "    await asyncio.gather(*(asyncio.wrap_future(f) for f in pool.prewarm()))\n"
        "    print('ready', flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    service = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPOSITORY_ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)},
    )
    try:
        assert service.stdout is not None
        assert (await asyncio.to_thread(service.stdout.readline)).strip() == b"ready"
        workers = [
            child
            for child in psutil.Process(service.pid).children(recursive=True)
            if "spawn_main" in " ".join(child.cmdline())
        ]
        assert len(workers) == 2
        service.kill()
        service.wait()
        _, alive = await asyncio.to_thread(psutil.wait_procs, workers, 5)
        assert not alive
    finally:
        if service.poll() is None:
            service.kill()
