"""The composition root: store, intake, pipeline, scheduler, signals.

``run_once`` takes in everything waiting, processes it and delivers what is due, then
returns (for cron-style use and tests). ``run_service`` runs until SIGTERM or SIGINT, then
stops taking messages, finishes the round in hand and closes the store. After a crash either
one resumes every unfinished message from its last committed step: the store is the only
record of what is due; the scheduler only wakes the sweeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from pfhjem_msg import metrics
from pfhjem_msg.config import Settings
from pfhjem_msg.followups import local_date
from pfhjem_msg.intake.spool import Spool
from pfhjem_msg.logs import get_logger
from pfhjem_msg.pipeline import APPREC_DEADLINE, Pipeline
from pfhjem_msg.store import open_store
from pfhjem_msg.store.base import OperatorStore
from pfhjem_msg.workers import DraftPool

log = get_logger("pfhjem_msg.daemon")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Daemon:
    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings
        self.clock = clock
        # The workers start first: forked, they must not inherit the store's open connection.
        drafts = DraftPool(settings, settings.workers)
        drafts.start()
        self.store: OperatorStore = open_store(settings.state_dir)
        self.pipeline = Pipeline(self.store, settings, clock, settings.retry, settings.smtp, drafts=drafts)
        self._delivery = ThreadPoolExecutor(1, thread_name_prefix="delivery")
        self.spool = (
            Spool(
                settings.intake.spool,
                self.store,
                clock,
                settings.intake.settle_seconds,
                settings.kith.limits.max_bytes,
            )
            if settings.intake.spool
            else None
        )

    def round(self) -> int:
        """One pass over everything due; the amount of work done (0 when idle).

        Deliveries due at the start of the round are made in their own thread meanwhile:
        creating and flushing files is mostly the kernel's work, which then overlaps with
        taking in and committing messages here. Each delivery is still marked delivered only
        once durable, and the round returns only when both are finished."""
        delivering = self._delivery.submit(self.pipeline.deliver_due, 500)
        try:
            work = self.spool.scan(limit=200) if self.spool else 0
            work += self.pipeline.process_due(limit=200)
        finally:
            delivered = delivering.result()
        return work + delivered

    def refresh_metrics(self) -> None:
        now = self.clock()
        metrics.update_status(self.store.status_facts(now, now - APPREC_DEADLINE), now.timestamp())
        for municipality, counts in self.store.followup_counts(local_date(now)).items():
            for condition, value in counts.items():
                metrics.child(metrics.followups, municipality, condition).set(value)

    def prune(self) -> None:
        """The retention sweep: what ``pfhjem-msg prune`` does, on the daemon's timer."""
        r = self.settings.retention
        if r.payload_days is None:
            return
        now = self.clock()
        result = self.store.prune(
            now - timedelta(days=r.payload_days),
            now - timedelta(days=r.metadata_days) if r.metadata_days else None,
            now,
        )
        if result.payloads or result.messages:
            self.store.audit("daemon", "prune", None,
                             f"{result.payloads} original(s) deleted, {result.messages} message(s) removed", now)  # fmt: skip
            log.info("retention.pruned", originals=result.payloads, messages=result.messages,
                     bytes_before=result.bytes_before, bytes_after=result.bytes_after)  # fmt: skip

    def _guarded(self, job: Callable[[], object]) -> Callable[[], None]:
        """A scheduled job that logs its failure instead of stopping the scheduler's thread."""

        def run() -> None:
            try:
                job()
            except Exception as exc:
                log.error("daemon.job_failed", job=getattr(job, "__name__", "?"), error=type(exc).__name__,
                          detail=str(exc)[:200])  # fmt: skip

        return run

    def run_once(self) -> int:
        while self.round():
            pass
        if self.pipeline.sweep_followups():
            while self.round():
                pass
        counts = self.store.counts()
        log.info("daemon.once_done", **{f"state_{k}": v for k, v in counts.items()})
        self._delivery.shutdown(wait=True)
        self.pipeline.close()
        self.store.close()
        return 0

    async def serve(
        self, stop: asyncio.Event, started: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        # Imported here: `run --once` and the operator commands need neither.
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        loop = asyncio.get_running_loop()
        worker = ThreadPoolExecutor(1, thread_name_prefix="pipeline")
        intake = ThreadPoolExecutor(1, thread_name_prefix="intake")
        wake = asyncio.Event()
        scheduler = AsyncIOScheduler(event_loop=loop)
        server = None
        info: dict[str, Any] = {"spool": str(self.settings.intake.spool) if self.spool else None}
        scheduler.add_job(wake.set, "interval", seconds=max(0.05, self.settings.sweep_seconds), id="sweep")
        scheduler.add_job(
            self._guarded(self.pipeline.flag_overdue_receipts), "interval", minutes=15, id="receipts"
        )
        scheduler.add_job(self._guarded(self.prune), "interval", hours=6, id="retention",
                          next_run_time=self.clock() + timedelta(minutes=1))  # fmt: skip
        scheduler.add_job(self._guarded(self.pipeline.sweep_followups), "interval",
                          minutes=max(0.01, self.settings.followups.sweep_minutes), id="followups",
                          next_run_time=self.clock())  # fmt: skip
        metrics_server = None
        if self.settings.metrics_address:
            metrics_server = metrics.serve(self.settings.metrics_address)
            info["metrics"] = "{}:{}".format(*self.settings.metrics_address)
            every = max(0.1, self.settings.metrics_refresh_seconds)
            scheduler.add_job(self._guarded(self.refresh_metrics), "interval", seconds=every, id="metrics",
                              next_run_time=self.clock())  # fmt: skip
        scheduler.start()
        if self.settings.intake.smtp is not None:
            from pfhjem_msg.intake.smtp import StoringHandler, start_server

            handler = StoringHandler(self.store, self.clock, intake, wake.set)
            server = await start_server(
                handler,
                self.settings.intake.smtp.host,
                self.settings.intake.smtp.port,
                self.settings.intake.smtp.max_message_bytes or self.settings.kith.limits.max_bytes,
            )
            info["smtp_port"] = server.sockets[0].getsockname()[1]
        await loop.run_in_executor(worker, self.pipeline.drafts.ready)
        log.info("daemon.started", **info)
        if started:
            started(info)
        poll = max(0.05, self.settings.intake.poll_seconds)
        try:
            while not stop.is_set():
                try:
                    busy = await loop.run_in_executor(worker, self.round)
                except Exception as exc:  # the store is down or similar: keep serving, log, wait
                    log.error("daemon.round_failed", error=type(exc).__name__, detail=str(exc)[:200])
                    busy = 0
                if busy:
                    continue
                wake.clear()
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
                await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
        finally:
            log.info("daemon.stopping")
            if server is not None:
                server.close()
                with contextlib.suppress(Exception):
                    await server.wait_closed()
            scheduler.shutdown(wait=False)
            if metrics_server is not None:
                metrics_server.shutdown()
            worker.shutdown(wait=True)
            intake.shutdown(wait=True)
            self._delivery.shutdown(wait=True)
            self.pipeline.close()
            self.store.close()
            log.info("daemon.stopped")

    def run_service(self) -> int:
        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await self.serve(stop)

        asyncio.run(main())
        return 0
