"""Drafting in worker processes, so reading and deciding messages uses every core while the
daemon's own process keeps the store, the files and the network.

Workers are forked while the daemon has a single thread (at start-up), so they begin with
the modules and the compiled schemas already in memory; a pool started later (after a worker
crashed, when the daemon runs threads that forking could leave holding locks) is spawned
afresh. Each worker is handed the daemon's own settings (plain, picklable data, validated once
when the daemon loaded them) and compiles the schemas from them; it never reads the
configuration file, so a pool restarted after the file was edited (or broken) decides with
exactly the settings the daemon delivers with. Each worker dies with the daemon: on Linux the kernel kills it when
its parent dies (``PR_SET_PDEATHSIG``); elsewhere it notices its parent is gone. A worker
that dies mid-batch (a crash in a C library) breaks the pool: the batch is then drafted one
message at a time in a fresh pool, and the message that breaks it again is reported as a
crash of its own, so the attempt counter fails it after a bounded number of tries.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import TypeVar

import structlog

from pfhjem_msg.config import Settings
from pfhjem_msg.drafting import Crash, Draft, Drafter, ReminderJob
from pfhjem_msg.kith.verdict import Options
from pfhjem_msg.logs import configure as configure_logs
from pfhjem_msg.logs import get_logger
from pfhjem_msg.logs import set_up as logs_set_up
from pfhjem_msg.store.base import DeliverySpec

log = get_logger("pfhjem_msg.workers")
_DRAFTER: Drafter | None = None

Job = tuple[bytes, int, datetime]
J = TypeVar("J")
R = TypeVar("R")


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(0)


def _init(settings: Settings, parent: int, logging: tuple[str, bool] | None = None) -> None:
    global _DRAFTER
    _die_with_parent(parent)
    if logging is not None and not structlog.is_configured():  # spawned, not forked
        configure_logs(*logging)
    _DRAFTER = Drafter(settings)


def _ready() -> bool:
    return _DRAFTER is not None


def _draft_many(jobs: list[Job]) -> list[Draft | Crash]:
    return [_draft(job) for job in jobs]


def _draft(job: Job) -> Draft | Crash:
    return _drafter().safe_draft(*job)


def _remind_many(jobs: list[ReminderJob]) -> list[DeliverySpec | Crash]:
    return [_remind(job) for job in jobs]


def _remind(job: ReminderJob) -> DeliverySpec | Crash:
    return _drafter().safe_reminder(job)


def _drafter() -> Drafter:
    assert _DRAFTER is not None, "worker not initialised"
    if os.getppid() == 1:  # orphaned where PR_SET_PDEATHSIG is not available
        os._exit(0)
    return _DRAFTER


class DraftPool:
    """Drafts batches of messages, in ``workers`` processes, or in this one when 1."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.workers = max(1, workers)
        self.local = Drafter(settings) if self.workers == 1 else None
        self._pool: ProcessPoolExecutor | None = None
        self._options: Options | None = None
        self._starting: list[Future[bool]] = []

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            method = "spawn"
            if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
                method = "fork"
                self.options()  # compiled here once, inherited by every worker
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context(method),
                initializer=_init,
                initargs=(self.settings, os.getpid(), logs_set_up()),
            )
        return self._pool

    def options(self) -> Options:
        """Reading options for the daemon's own occasional reads (schemas compiled once)."""
        if self._options is None:
            self._options = self.local.options if self.local is not None else Drafter(self.settings).options
        return self._options

    def start(self) -> None:
        """Start the workers without waiting: they compile the schemas while the daemon takes
        in what is waiting."""
        if self.local is None and not self._starting:
            self._starting = [self._executor().submit(_ready) for _ in range(self.workers)]

    def ready(self) -> None:
        """Wait until the workers can draft (starting them if need be). The pipeline calls this
        before it counts attempts, so a daemon stopped while its workers start counts none."""
        if self.local is not None:
            return
        self.start()
        try:
            for future in self._starting:
                future.result()
        except BrokenProcessPool:
            self._reset()
            raise

    def draft(self, jobs: Sequence[Job], chunk: int = 25) -> Iterator[list[Draft | Crash]]:
        """Drafts in chunks, in order. The work is handed to the workers before this returns,
        so the caller can deliver or commit other things while they draft."""
        chunks = [list(jobs[i : i + chunk]) for i in range(0, len(jobs), chunk)]
        if self.local is not None:
            local = self.local
            return iter([[local.safe_draft(*job) for job in c] for c in chunks])
        futures = [self._executor().submit(_draft_many, c) for c in chunks]
        return self._results(chunks, futures, _draft)

    def remind(self, jobs: Sequence[ReminderJob], chunk: int = 25) -> list[DeliverySpec | Crash]:
        """Build the reminders the sweep found due (read the original, build the Dialogmelding,
        sign it) in the workers, like messages: signing and parsing are the costly part, and
        the daemon's own thread keeps the store and the network."""
        if self.local is not None:
            return [self.local.safe_reminder(job) for job in jobs]
        chunks = [list(jobs[i : i + chunk]) for i in range(0, len(jobs), chunk)]
        futures = [self._executor().submit(_remind_many, c) for c in chunks]
        return [r for part in self._results(chunks, futures, _remind) for r in part]

    def _results(self, chunks: list[list[J]], futures: list[Future[list[R]]], one: Callable[[J], R | Crash]
                 ) -> Iterator[list[R | Crash]]:  # fmt: skip
        for n, future in enumerate(futures):
            try:
                yield list(future.result())
            except BrokenProcessPool:
                log.error("workers.broken", batch=sum(len(c) for c in chunks[n:]))
                self._reset()
                for c in chunks[n:]:
                    yield [self._one(one, job) for job in c]
                return

    def _one(self, one: Callable[[J], R | Crash], job: J) -> R | Crash:
        """One job in a fresh pool: finds the message (or reminder) that breaks a worker."""
        try:
            return self._executor().submit(one, job).result()
        except BrokenProcessPool:
            self._reset()
            return Crash("processing crashed its worker process")

    def _reset(self) -> None:
        self._starting = []
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self, grace: float = 10.0) -> None:
        """Stop the workers, waiting at most ``grace`` seconds, then end the ones still there.
        ``shutdown(wait=True)`` alone can wait for ever on a pool whose workers are still being
        spawned (after a reload) when the stop comes, and a daemon told to stop must stop;
        workers hold nothing the daemon has not committed."""
        self._starting = []
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                log.warning("workers.stop_forced", pid=process.pid)
                process.kill()
                process.join(5.0)
