"""The composition root: store, intake, pipeline, scheduler, signals.

``run_once`` takes in everything waiting, processes it and delivers what is due, then
returns (for cron-style use and tests). ``run_service`` runs until SIGTERM or SIGINT, then
stops taking messages, finishes the round in hand and closes the store. After a crash either
one resumes every unfinished message from its last committed step: the store is the only
record of what is due; the scheduler only wakes the sweeps.

One thread owns the pipeline: the scheduler only marks periodic work due (the follow-up
sweep, the overdue-receipt check, EDI 2.0 receipts, retention, the metrics refresh) and wakes
the loop; the pipeline's thread does that work between rounds, never beside one.

On the SQLite file either one holds the store's lock (``pfhjem_msg.lock``): one daemon per
store. On PostgreSQL any number of daemons share the store: each claims the messages and
deliveries it works on under a lease (``pfhjem_msg.lease``), holds a shared advisory lock
that keeps ``store migrate`` from running under it (``pfhjem_msg.lock.Presence``), and each
periodic job runs on one daemon at a time, under the store's ``exclusive`` lock; the EDI 2.0 intake round too, as its
exactly-once protocol assumes one poller. The service
speaks systemd's notify protocol (``pfhjem_msg.notify``) and reloads its configuration on
SIGHUP, between rounds, on the pipeline's thread: the new file is validated first and applied
only if it is valid. What a running daemon cannot change (the store, the spool, the SMTP
listener, the metrics address) keeps its old value until a restart, and the log says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pfhjem_msg import metrics, notify
from pfhjem_msg.config import Settings, load
from pfhjem_msg.errors import ConfigError, PfhjemError, StoreUnavailable
from pfhjem_msg.followups import local_date
from pfhjem_msg.intake.spool import Spool
from pfhjem_msg.lease import Lease, daemon_id
from pfhjem_msg.lock import Presence, StoreLock, runs_alone
from pfhjem_msg.logs import get_logger
from pfhjem_msg.pipeline import APPREC_DEADLINE, Pipeline
from pfhjem_msg.store import open_store
from pfhjem_msg.store.edi2 import DaemonStore
from pfhjem_msg.workers import DraftPool

if TYPE_CHECKING:
    from pfhjem_msg.edi2.intake import Edi2Intake

log = get_logger("pfhjem_msg.daemon")


def utc_now() -> datetime:
    return datetime.now(UTC)


class AddressInUse(PfhjemError):
    """A listening address of the configuration cannot be bound (exit 2)."""


@contextlib.contextmanager
def listening(key: str, host: str, port: int) -> Iterator[None]:
    """Turn a failed bind into one line naming the configuration key, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise AddressInUse(
            f"{key}: cannot listen on {host}:{port}: {exc.strerror or exc}; stop what uses it "
            "or choose another address in the configuration"
        ) from None


RESTART_ONLY = ("state_dir", "store.url", "intake.spool", "intake.smtp", "metrics.address", "intake.edi2")
"""Settings a reload cannot change: the store (its file in ``state_dir``, or ``[store] url``),
the spool and the listeners stay until a restart. A reload that took a new store url would
leave the daemon writing the old store while its settings, and the operator commands, name
the new one."""


def _restart_only(settings: Settings) -> tuple[object, ...]:
    return (settings.state_dir, settings.store_url, settings.intake.spool, settings.intake.smtp,
            settings.metrics_address, settings.edi2)  # fmt: skip


class Daemon:
    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings
        self.clock = clock
        self.id = daemon_id()
        """What this daemon writes on the rows it claims (host, pid, a random part)."""
        self.alone = runs_alone(settings)
        # Before the workers, which it must not start twice.
        self.lock = StoreLock.acquire(settings.state_dir) if self.alone else None
        self._round_began: float | None = None
        """When the round in hand began (monotonic); None between rounds. The watchdog reads it."""
        self._due: set[str] = set()
        """Periodic jobs the scheduler marked due, done by the pipeline's thread between rounds."""
        self._due_lock = threading.Lock()
        # The workers start first: forked, they must not inherit the store's open connection.
        drafts = DraftPool(settings, settings.workers)
        drafts.start()
        self.store: DaemonStore = open_store(settings)
        if self.alone:
            self.store.release_claims(None)  # an earlier daemon's: it has died, the lock says so
        # Shared, on PostgreSQL: `store migrate` sees that daemons run and is refused.
        self.presence = Presence(settings.store_url, self.id) if settings.store_url else None
        lease = Lease(self.id, settings.lease_seconds, self.store, clock)
        self.pipeline = Pipeline(self.store, settings, clock, settings.retry, settings.smtp, drafts=drafts,
                                 lease=lease)  # fmt: skip
        self._delivery = ThreadPoolExecutor(1, thread_name_prefix="delivery")
        self.spool: Spool | None = None
        self.spool = self._spool(settings)
        self.edi2: Edi2Intake | None = None
        self._edi2_next = 0.0
        """When (monotonic) the next EDI 2.0 intake round is due."""
        self._edi2_saved: tuple[object, ...] | None = None
        """The health last written to the store."""
        self._edi2_saved_at = 0.0
        if settings.edi2 is not None:
            from pfhjem_msg.edi2.client import Edi2Client
            from pfhjem_msg.edi2.intake import Edi2Intake

            client = Edi2Client(settings.edi2)
            self.pipeline.edi2 = client
            self.edi2 = Edi2Intake(client, self.store, clock, settings.retry)

    def _spool(self, settings: Settings) -> Spool | None:
        if not settings.intake.spool:
            return None
        return Spool(
            settings.intake.spool,
            self.store,
            self.clock,
            settings.intake.settle_seconds,
            settings.kith.limits.max_bytes,
            # Alone, whatever waits in .claimed was left by a daemon that died; shared, another
            # daemon's files wait there while it stores them.
            takeover_seconds=0.0 if self.alone else settings.lease_seconds,
            claimer=self.spool.claimer if self.spool else None,  # a reload keeps its claimed files
        )

    def close(self) -> None:
        """Finish what is in hand, close the store and free it for the next daemon."""
        self._delivery.shutdown(wait=True)
        self.pipeline.close()
        if self.pipeline.edi2 is not None:
            self.pipeline.edi2.close()
        try:
            self.store.release_claims(self.id)  # what is left is free for the others at once
        except PfhjemError as exc:
            log.warning("daemon.release_failed", error=type(exc).__name__,
                        note="other daemons take this one's work over when its lease expires")  # fmt: skip
        self.store.close()
        if self.presence is not None:
            self.presence.close()
        if self.lock is not None:
            self.lock.release()

    def reload(self) -> bool:
        """Read the configuration file again and apply it if it is valid; keep the running one
        and log one error line if it is not. Runs on the pipeline's thread between rounds, so
        no round sees its settings change under it. True if the new settings are in force."""
        path = self.settings.path
        try:
            new = load(path)  # which checks every group it names, with its line
            keep = [key for key, a, b in zip(RESTART_ONLY, _restart_only(self.settings), _restart_only(new),
                                             strict=True) if a != b]  # fmt: skip
            new = replace(
                new,
                state_dir=self.settings.state_dir,
                store_url=self.settings.store_url,
                intake=replace(new.intake, spool=self.settings.intake.spool, smtp=self.settings.intake.smtp),
                metrics_address=self.settings.metrics_address,
                edi2=self.settings.edi2,
            )
            drafts = DraftPool(new, new.workers)
            drafts.options()  # the schemas, registry and keys the new settings name load, or this raises
        except ConfigError as exc:
            lines = str(exc).splitlines()
            log.error("daemon.reload_rejected", config=str(path), problems=[x.strip() for x in lines[1:]] or lines,
                      action="the running configuration stays in force; correct the file and reload again")  # fmt: skip
            return False
        self.pipeline.flush()  # the batch drafted under the old settings is committed under them
        self.pipeline.drafts.close()
        drafts.start()
        self.pipeline.drafts = drafts
        self.pipeline.settings = new
        self.pipeline.policy = new.retry
        self.pipeline.smtp = new.smtp
        self.pipeline.lease.seconds = new.lease_seconds
        self.settings = new
        self.spool = self._spool(new)
        if keep:
            log.warning("daemon.reload_needs_restart", keys=keep,
                        action="these keep their running values until the service is restarted")  # fmt: skip
        log.info(
            "daemon.reloaded", config=str(path), municipalities=len(new.municipalities), workers=new.workers
        )
        return True

    def _timed_round(self) -> int:
        self._round_began = time.monotonic()
        try:
            return self.round()
        finally:
            self._round_began = None

    async def _watchdog(self, interval: float) -> None:
        """Ping systemd while rounds progress: between rounds, or in a round younger than the
        interval. A round that hangs (a disk, a lock, a peer that never answers) stops the
        pings even though the event loop still runs, and systemd restarts the daemon, which
        loses nothing: the store is the record of what is due."""
        stalled = False
        while True:
            began = self._round_began
            if began is None or time.monotonic() - began < interval:
                notify.notify("WATCHDOG=1")
                stalled = False
            elif not stalled:
                stalled = True
                log.error("daemon.round_stalled", seconds=round(time.monotonic() - began),
                          action="watchdog pings stop; systemd restarts the daemon if this goes on")  # fmt: skip
            await asyncio.sleep(interval / 2)

    def round(self) -> int:
        """One pass over everything due; the amount of work done (0 when idle).

        Deliveries due at the start of the round are made in their own thread meanwhile:
        creating and flushing files is mostly the kernel's work, which then overlaps with
        taking in and committing messages here. Each delivery is still marked delivered only
        once durable, and the round returns only when both are finished."""
        self.pipeline.lease.keep()
        if self.presence is not None:
            self.presence.keep(every=self.settings.lease_seconds / 3)
        delivering = self._delivery.submit(self.pipeline.deliver_due, 500)
        try:
            work = self.spool.scan(limit=200) if self.spool else 0
            work += self.edi2_round()
            work += self.pipeline.process_due(limit=200)
        finally:
            delivered = delivering.result()
        return work + delivered

    def edi2_round(self, force: bool = False) -> int:
        """One EDI 2.0 intake round (list, fetch, store; post the AppRecs decided; mark read)
        when due: every ``poll_seconds``, and every round while stored messages wait for their
        decision, so their AppRecs go soon after it. On the pipeline's thread, one round at a
        time on the daemon's store connection. Returns the work done."""
        if self.edi2 is None or self.settings.edi2 is None:
            return 0
        now = time.monotonic()
        if not force and now < self._edi2_next:
            return 0
        with self.store.exclusive("edi2_intake") as mine:
            if not mine:  # another daemon polls the service just now
                self._edi2_next = now + self.settings.edi2.poll_seconds
                return 0
            result = self.edi2.round()
        self._edi2_next = now + (0 if result.waiting else self.settings.edi2.poll_seconds)
        if result.stored:
            metrics.child(metrics.received, "edi2").inc(result.stored)
        for message_id, state in result.finished:
            self.pipeline.log_transition(message_id, state)
        self._save_edi2_health(now)
        return result.stored + result.apprecs_posted + result.marked_read

    def _save_edi2_health(self, now: float) -> None:
        """For ``status`` (another process): written when it changes, and once a minute while
        it works, not after every round."""
        assert self.edi2 is not None
        h = self.edi2.health
        state = (h.failing_since, h.last_error, h.auth_failing, h.failures)
        if state == self._edi2_saved and now - self._edi2_saved_at < 60:
            return
        self.store.edi2_save_health(h, self.clock())
        self._edi2_saved, self._edi2_saved_at = state, now

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

    def _periodic(self, name: str) -> Callable[[], object]:
        """Looked up when it runs, not when it is scheduled: a reload may replace what it uses."""
        return {
            "followups": self.pipeline.sweep_followups,
            "receipts": self.pipeline.flag_overdue_receipts,
            "edi2_receipts": self.pipeline.poll_edi2_receipts,
            "retention": self.prune,
            "metrics": self.refresh_metrics,
        }[name]

    def _mark_due(
        self, name: str, loop: asyncio.AbstractEventLoop, wake: asyncio.Event
    ) -> Callable[[], None]:
        """What the scheduler runs: it only notes the job and wakes the loop (from any thread)."""

        def mark() -> None:
            with self._due_lock:
                self._due.add(name)
            loop.call_soon_threadsafe(wake.set)

        return mark

    def run_due_jobs(self) -> int:
        """The periodic jobs marked due, on the pipeline's thread, each guarded; how many ran."""
        with self._due_lock:
            due, self._due = self._due, set()
        for name in ("followups", "receipts", "edi2_receipts", "retention", "metrics"):
            if name in due:
                self._guarded(self._exclusively(name))()
        return len(due)

    def _exclusively(self, name: str) -> Callable[[], None]:
        """The periodic job ``name`` unless another daemon on the store does it just now (it
        is then done there; this daemon's next tick tries again)."""

        def job() -> None:
            with self.store.exclusive(name) as mine:
                if mine:
                    self._periodic(name)()
                else:
                    log.debug("daemon.job_elsewhere", job=name)

        job.__name__ = name
        return job

    def _guarded(self, job: Callable[[], object]) -> Callable[[], None]:
        """A scheduled job that logs its failure instead of stopping the scheduler's thread."""

        def run() -> None:
            try:
                job()
            except StoreUnavailable:
                pass  # the store logged it once; the job runs again at its next turn
            except Exception as exc:
                log.error("daemon.job_failed", job=getattr(job, "__name__", "?"), error=type(exc).__name__,
                          detail=str(exc)[:200])  # fmt: skip

        return run

    def run_once(self) -> int:
        """Take in → process and flush → settle (EDI 2.0 AppRecs and read marks) → deliver,
        until nothing is left to do."""
        if self.spool:
            self.spool.wait_until_settled()  # a file copied in just now is taken, not left
        self._until_idle()
        with self.store.exclusive("followups") as mine:
            swept = mine and self.pipeline.sweep_followups()
        if swept:
            self._until_idle()
        with self.store.exclusive("edi2_receipts") as mine:
            if mine:
                self.pipeline.poll_edi2_receipts()
        spooled = self.spool.report_once() if self.spool else {}
        counts = self.store.counts()
        log.info("daemon.once_done", **{f"spool_{k}": v for k, v in spooled.items()},
                 **{f"state_{k}": v for k, v in counts.items()})  # fmt: skip
        self.close()
        return 0

    def _until_idle(self) -> None:
        while True:
            work = self.round()
            self.pipeline.flush()
            work += self.edi2_round(force=True)
            if not work and not self.pipeline.deliver_due(500):
                return

    async def serve(
        self,
        stop: asyncio.Event,
        started: Callable[[dict[str, Any]], None] | None = None,
        reload: asyncio.Event | None = None,
    ) -> None:
        # Imported here: `run --once` and the operator commands need neither.
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        loop = asyncio.get_running_loop()
        worker = ThreadPoolExecutor(1, thread_name_prefix="pipeline")
        intake = ThreadPoolExecutor(1, thread_name_prefix="intake")
        wake = asyncio.Event()
        scheduler = AsyncIOScheduler(event_loop=loop)
        server = None
        info: dict[str, Any] = {"spool": str(self.settings.intake.spool) if self.spool else None,
                                "edi2": self.settings.edi2.base_url if self.settings.edi2 else None,
                                "daemon_id": self.id, "store_shared": not self.alone}  # fmt: skip
        scheduler.add_job(wake.set, "interval", seconds=max(0.05, self.settings.sweep_seconds), id="sweep")
        scheduler.add_job(self._mark_due("receipts", loop, wake), "interval", minutes=15, id="receipts")
        if self.edi2 is not None:
            scheduler.add_job(self._mark_due("edi2_receipts", loop, wake), "interval", minutes=5,
                              id="edi2_receipts", next_run_time=self.clock())  # fmt: skip
        scheduler.add_job(self._mark_due("retention", loop, wake), "interval", hours=6, id="retention",
                          next_run_time=self.clock() + timedelta(minutes=1))  # fmt: skip
        scheduler.add_job(self._mark_due("followups", loop, wake), "interval",
                          minutes=max(0.01, self.settings.followups.sweep_minutes), id="followups",
                          next_run_time=self.clock())  # fmt: skip
        metrics_server = None
        if self.settings.metrics_address:
            with listening("metrics.address", *self.settings.metrics_address):
                metrics_server = metrics.serve(self.settings.metrics_address)
            info["metrics"] = "{}:{}".format(*self.settings.metrics_address)
            every = max(0.1, self.settings.metrics_refresh_seconds)
            scheduler.add_job(self._mark_due("metrics", loop, wake), "interval", seconds=every, id="metrics",
                              next_run_time=self.clock())  # fmt: skip
        scheduler.start()
        if self.settings.intake.smtp is not None:
            from pfhjem_msg.intake.smtp import StoringHandler, start_server

            handler = StoringHandler(self.store, self.clock, intake, wake.set)
            with listening(
                "intake.smtp.port", self.settings.intake.smtp.host, self.settings.intake.smtp.port
            ):
                server = await start_server(
                    handler,
                    self.settings.intake.smtp.host,
                    self.settings.intake.smtp.port,
                    self.settings.intake.smtp.max_message_bytes or self.settings.kith.limits.max_bytes,
                    limits=self.settings.intake.smtp,
                    temp_dir=self.settings.state_dir,
                )
            info["smtp_port"] = server.sockets[0].getsockname()[1]
        await loop.run_in_executor(worker, self.pipeline.drafts.ready)
        log.info("daemon.started", **info)
        notify.notify("READY=1", "STATUS=serving")
        interval = notify.watchdog_seconds()
        watchdog = asyncio.ensure_future(self._watchdog(interval)) if interval else None
        if started:
            started(info)
        reload = reload or asyncio.Event()
        try:
            while not stop.is_set():
                if reload.is_set():
                    reload.clear()
                    await self._reload_between_rounds(worker, scheduler)
                if self._due:
                    await loop.run_in_executor(worker, self.run_due_jobs)
                try:
                    busy = await loop.run_in_executor(worker, self._timed_round)
                except StoreUnavailable:  # the store logged it once, and backs off: wait
                    busy = 0
                except Exception as exc:  # keep serving, log, wait
                    log.error("daemon.round_failed", error=type(exc).__name__, detail=str(exc)[:200])
                    busy = 0
                if busy:
                    continue
                wake.clear()
                waiters = [asyncio.ensure_future(e.wait()) for e in (stop, wake, reload)]
                poll = max(0.05, self.settings.intake.poll_seconds)
                await asyncio.wait(waiters, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
        finally:
            log.info("daemon.stopping")
            notify.notify("STOPPING=1")
            if watchdog is not None:
                watchdog.cancel()
            if server is not None:
                server.close()
                with contextlib.suppress(Exception):
                    await server.wait_closed()
            scheduler.shutdown(wait=False)
            if metrics_server is not None:
                metrics_server.shutdown()
            worker.shutdown(wait=True)
            intake.shutdown(wait=True)
            self.close()
            log.info("daemon.stopped")

    async def _reload_between_rounds(self, worker: ThreadPoolExecutor, scheduler: Any) -> None:
        """SIGHUP: systemd hears RELOADING=1, then READY=1 whether the file was good or not."""
        notify.reloading()
        loop = asyncio.get_running_loop()
        self._round_began = time.monotonic()  # a reload that hangs is a round that hangs
        try:
            applied = await loop.run_in_executor(worker, self.reload)
        finally:
            self._round_began = None
        if applied:
            s = self.settings
            scheduler.reschedule_job("sweep", trigger="interval", seconds=max(0.05, s.sweep_seconds))
            scheduler.reschedule_job(
                "followups", trigger="interval", minutes=max(0.01, s.followups.sweep_minutes)
            )
            if scheduler.get_job("metrics") is not None:
                scheduler.reschedule_job(
                    "metrics", trigger="interval", seconds=max(0.1, s.metrics_refresh_seconds)
                )
        notify.notify(
            "READY=1", "STATUS=serving" if applied else "STATUS=serving; the last reload was rejected"
        )

    def run_service(self) -> int:
        async def main() -> None:
            stop = asyncio.Event()
            reload = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            loop.add_signal_handler(signal.SIGHUP, reload.set)
            if _reload_asked_early:
                reload.set()
            await self.serve(stop, reload=reload)

        try:
            asyncio.run(main())
        except AddressInUse:
            self.close()
            raise
        return 0


_reload_asked_early = False


def catch_early_reload() -> None:
    """Until the service's event loop takes SIGHUP over, remember a reload asked for during
    start-up: SIGHUP's default action would end the process (exit 129)."""

    def remember(_signum: int, _frame: object) -> None:
        global _reload_asked_early
        _reload_asked_early = True

    signal.signal(signal.SIGHUP, remember)
