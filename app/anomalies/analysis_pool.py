"""The processes that fit anomaly models. CPU-bound work never runs on the event loop:
requests and fleet scans hand it to this pool, with bounds that keep the API responsive.

* Requests: at most ANALYSIS_MAX_PENDING in progress or waiting (more get 503 at once),
  each given ANALYSIS_TIMEOUT_SECONDS including its wait.
* A fleet scan uses at most workers - 1 processes (at least 1), so a request always finds a
  process free of scan work (with 2 or more workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

from app.anomalies.exceptions import AnalysisBusy, AnalysisTimedOut
from app.anomalies.worker import exit_with_parent, warm_up

logger = logging.getLogger(__name__)
T = TypeVar("T")


class AnalysisPool:
    def __init__(self, workers: int, *, max_pending: int, timeout_seconds: float) -> None:
        # spawn, not fork: forking a process with an event loop and threads is unsafe.
        self._executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=exit_with_parent,
            initargs=(os.getpid(),),
        )
        self.workers = workers
        self.timeout_seconds = timeout_seconds
        self.max_pending = max_pending
        self._pending = 0
        self._in_flight = 0
        self._request_slots = asyncio.Semaphore(workers)
        self.scan_slots = asyncio.Semaphore(max(1, workers - 1))

    @property
    def pending(self) -> int:
        """Requests in progress or waiting for a process (at most max_pending)."""
        return self._pending

    @property
    def in_flight(self) -> int:
        """Computations handed to the processes and not finished: running, or queued in
        the executor (requests and a scan together may queue more than `workers`)."""
        return self._in_flight

    def prewarm(self) -> list[Future[None]]:
        return [self._executor.submit(warm_up) for _ in range(self.workers)]

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """A request's analysis: bounded, and timed out (queueing included)."""
        if self._pending >= self.max_pending:
            raise AnalysisBusy(self._pending)
        self._pending += 1
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await self._request_slots.acquire()
                return await self._submit(function, args, self._request_slots)
        except TimeoutError:
            raise AnalysisTimedOut(self.timeout_seconds) from None
        finally:
            self._pending -= 1

    async def run_for_scan(self, function: Callable[..., T], *args: Any) -> T:
        """A fleet scan's analysis: no timeout, at most scan_slots at once."""
        await self.scan_slots.acquire()
        return await self._submit(function, args, self.scan_slots)

    async def _submit(
        self, function: Callable[..., T], args: tuple[Any, ...], slots: asyncio.Semaphore
    ) -> T:
        # The slot is released when the process is done, not when the caller stops
        # waiting: a timed-out computation still occupies its process until it ends.
        loop = asyncio.get_running_loop()
        try:
            future = self._executor.submit(function, *args)
        except BaseException:
            slots.release()
            raise
        self._in_flight += 1

        def finished() -> None:
            self._in_flight -= 1
            slots.release()

        def release(_: Future[T]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(finished)

        future.add_done_callback(release)
        return await asyncio.wrap_future(future)

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
