"""The dispatcher: due work → steps → outcomes → transitions.

A stored message goes received → parsed → classified → routed in one committed step (the
steps before routing are recomputed from the stored bytes, so nothing is lost if a crash
comes first), then each delivery is performed and marked on its own, and the message reaches
``done`` (or ``rejected`` after a negative AppRec) when the last one is. Steps return
outcomes; only a bug raises, and a bug fails that one message after a bounded number of
tries while the daemon serves the others.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from pfhjem_msg import metrics
from pfhjem_msg.config import Settings
from pfhjem_msg.drafting import Crash, Draft, ReminderJob, reminder_as_dialog, reminder_recipient
from pfhjem_msg.edi2 import transport as edi2_transport
from pfhjem_msg.edi2.client import Edi2Client
from pfhjem_msg.edi2.helseid import Edi2AuthError
from pfhjem_msg.errors import PermanentDeliveryError, TransientDeliveryError
from pfhjem_msg.followups import due_phase, local_date
from pfhjem_msg.kith.apprec import apprec_status
from pfhjem_msg.lifecycle import OUTCOMES
from pfhjem_msg.logs import get_logger
from pfhjem_msg.retry import RetryPolicy
from pfhjem_msg.store.base import (
    Change,
    DeliveryRow,
    Facts,
    MessageRow,
    Receipt,
    Transition,
)
from pfhjem_msg.store.edi2 import DaemonStore
from pfhjem_msg.transport import dir as dir_transport
from pfhjem_msg.transport import smtp as smtp_transport
from pfhjem_msg.workers import DraftPool, Job

APPREC_DEADLINE = timedelta(hours=96)
RECEIPT_WATCH = timedelta(days=8)
"""How long the receiver's AppRec for what we sent through the message service is asked for:
past the 96-hour check, which has flagged it by then."""
log = get_logger("pfhjem_msg.pipeline")


@dataclass
class _Batch:
    """Messages handed to the workers and not yet committed."""

    jobs: list[Job]
    attempts: dict[int, int]
    again: set[int]
    results: Iterator[list[Draft | Crash]]
    now: datetime


class Pipeline:
    def __init__(
        self,
        store: DaemonStore,
        settings: Settings,
        clock: Callable[[], datetime],
        policy: RetryPolicy | None = None,
        smtp: smtp_transport.SmtpSettings | None = None,
        rng: random.Random | None = None,
        workers: int = 1,
        drafts: DraftPool | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.smtp = smtp or smtp_transport.SmtpSettings()
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not security)
        self.drafts = drafts or DraftPool(settings, workers)
        self._inflight: _Batch | None = None
        self.edi2: Edi2Client | None = None
        """The message service's client when EDI 2.0 is configured (set by the daemon)."""

    def close(self) -> None:
        """Commit what is being drafted, then stop the workers."""
        self.flush()
        self.drafts.close()

    # -- messages ----------------------------------------------------------------------------

    def process_due(self, limit: int = 200) -> int:
        """Process what is due, double-buffered: the fresh messages found now are handed to the
        workers, and while they draft, the batch handed over last time is committed (and the
        round goes on to deliver and take in). Fresh messages count their attempt together
        (one commit per batch); a message whose earlier attempt never finished is tried on its
        own, so a message that crashes the process is counted alone and its neighbours are
        not. Returns the number of messages started and finished."""
        busy = set(self._inflight.attempts) if self._inflight else set()
        due = [
            d for d in self.store.due_messages(self.clock(), limit + len(busy)) if d.message_id not in busy
        ]
        due = due[:limit]
        if due:
            self.drafts.ready()
        again = {d.message_id for d in due if d.again}
        fresh = [d.message_id for d in due if d.attempts == 0]
        started = self._start(self.store.begin_attempts(fresh, self.clock()), again) if fresh else None
        previous, self._inflight = self._inflight, started
        if previous is not None:
            self._finish(previous)
        for d in due:
            if d.attempts:
                self._finish(self._start(self.store.begin_attempts([d.message_id], self.clock()), again))
        return len(due) + (len(previous.attempts) if previous else 0)

    def flush(self) -> None:
        """Commit the batch being drafted, if any."""
        batch, self._inflight = self._inflight, None
        if batch is not None:
            self._finish(batch)

    def _start(self, attempts: dict[int, int], again: set[int]) -> _Batch:
        now = self.clock()
        jobs = []
        failed: list[Change] = []
        for message_id, count in attempts.items():
            if count > self.policy.pipeline_attempts:
                reason = f"processing crashed or failed {count - 1} times; see the earlier events"
                failed.append(Change(message_id, [Transition("failed", reason)]))
            else:
                jobs.append((self.store.raw(message_id), message_id, now))
        self._commit(failed, now)
        return _Batch(jobs, attempts, again, self.drafts.draft(jobs), now)

    def _finish(self, batch: _Batch) -> None:
        seen: dict[tuple[str, str | None], int] = {}
        done = 0
        now = batch.now
        for drafts in batch.results:
            changes = []
            for (_, message_id, _), draft in zip(batch.jobs[done : done + len(drafts)], drafts, strict=True):
                if isinstance(draft, Crash):
                    count = batch.attempts[message_id]
                    self.store.postpone(message_id, now + self.policy.delay(count, self.rng),
                                        draft.reason + "; will retry", now)  # fmt: skip
                    log.error("message.error", message_id=message_id, attempt=count)
                else:
                    changes.append(self._conclude(draft, seen, message_id in batch.again))
            done += len(drafts)
            self._commit(changes, now)

    def _forced_replay(self, message_id: int) -> bool:
        row = self.store.message(message_id)
        return row is not None and row.replay_of is not None

    def _no_second_apprec(self, change: Change) -> Change:
        """A replay never sends a second AppRec for the same received message; it says so."""
        owed = [d for d in change.deliveries if d.kind == "apprec"]
        if not owed:
            return change
        sent = self.store.apprec_sent(change.message_id)
        if sent is None:
            return change
        wanted, had = apprec_status(owed[0].payload), apprec_status(sent.payload)
        note = (
            f"; the replay would have needed an AppRec with status {wanted}, but message {sent.message_id} "
            f"already got one (status {had}) and none is sent again"
            if wanted != had
            else f"; AppRec not sent again: message {sent.message_id} already got one (status {had})"
        )
        steps = list(change.steps)
        steps[-1] = replace(steps[-1], reason=steps[-1].reason + note)
        return replace(change, steps=steps, deliveries=[d for d in change.deliveries if d.kind != "apprec"])

    def _commit(self, changes: list[Change], now: datetime) -> None:
        if changes:
            self.store.apply(changes, now)
        for c in changes:
            self._log(c.message_id, c.steps[-1].to_state, c.facts)

    def _conclude(self, draft: Draft, seen: dict[tuple[str, str | None], int], again: bool) -> Change:
        return self._via_edi2(self._answered(draft, seen, again))

    def _via_edi2(self, change: Change) -> Change:
        """A message that came over EDI 2.0 is answered over EDI 2.0: its AppRec is posted by
        the intake for the service message it came in, and what would go to the hub outbox goes
        with ``POST /Messages``; so does what answers the spool and SMTP with ``send_via = "edi2"``."""
        if self.settings.edi2 is None or not change.deliveries:
            return change
        row = self.store.message(change.message_id)
        from_edi2 = row is not None and row.source.startswith("edi2:")
        replayed = not from_edi2 and self._replays_edi2(row)
        if not (from_edi2 or replayed) and self.settings.send_via != "edi2":
            return change
        deliveries = [
            replace(d, transport="edi2_apprec")
            if d.kind == "apprec" and from_edi2
            else replace(d, transport="edi2")
            if d.transport == "hub"
            else d
            for d in change.deliveries
        ]
        return replace(change, deliveries=deliveries)

    def _replays_edi2(self, row: MessageRow | None) -> bool:
        """A replay (as a new message) of one that came over EDI 2.0: answered over it too. It
        has no service message of its own, so an AppRec it still owes goes with ``POST /Messages``."""
        for _ in range(10):
            if row is None or row.replay_of is None:
                return False
            if self.store.edi2_links(row.replay_of):
                return True
            row = self.store.message(row.replay_of)
        return False

    def _answered(self, draft: Draft, seen: dict[tuple[str, str | None], int], again: bool) -> Change:
        """Answer the draft's questions from the store (and from this batch, not yet committed)."""
        change = draft.change
        if again:
            change = self._no_second_apprec(change)
        if draft.duplicate_of is not None and draft.parsed is not None:
            msg_id, sender = draft.duplicate_of
            earlier = seen.get(draft.duplicate_of) or self.store.find_duplicate(
                change.message_id, msg_id, sender
            )
            forced = again and earlier is not None and self._forced_replay(change.message_id)
            if earlier is not None and not forced:
                reason = (
                    f"same MsgId from the same sender as message {earlier}: processed once, acknowledged once"
                )
                return replace(change, steps=[draft.parsed, Transition("duplicate", reason)], deliveries=(),
                               on_delivered="done")  # fmt: skip
            seen[draft.duplicate_of] = change.message_id
        q = draft.receipt
        if q is not None:
            ours = self.store.outgoing(q.original_msg_id) if q.original_msg_id else None
            if ours is None:
                reason = f"AppRec (status {q.status}) for MsgId {q.original_msg_id}, which we did not send"
                return replace(change, steps=[*change.steps, Transition("done", reason)])
            hold = None
            if q.status != "1" and ours.kind == "gp_copy":
                hold = (
                    f"the GP copy (MsgId {ours.out_msg_id}) was rejected by its receiver: "
                    f"status {q.status} {q.errors}"
                )
            reason = f"AppRec status {q.status} {q.errors} for our {ours.kind} of message {ours.message_id}"
            return replace(change, steps=[*change.steps, Transition("done", reason.replace("  ", " "))],
                           receipt=Receipt(ours.id, q.status, q.errors, hold))  # fmt: skip
        return change

    def log_transition(self, message_id: int, state: str) -> None:
        """A message another part of the daemon finished (the EDI 2.0 intake, posting its
        AppRec): logged and counted like those the pipeline finishes."""
        self._log(message_id, state, None)

    def _log(self, message_id: int, state: str, facts: Facts | None) -> None:
        """One log line per transition; an outcome also counts in the metrics."""
        row = self.store.message(message_id) if facts is None or state in OUTCOMES else None
        if row is not None:
            facts = Facts(row.msg_id, row.msg_type, row.sender_her, row.receiver_her, row.marked)
            if state in OUTCOMES:
                metrics.child(metrics.processed, metrics.type_label(row.msg_type), state).inc()
                metrics.latency.observe(max(0.0, (self.clock() - row.received_at).total_seconds()))
        log.info(
            "message.transition",
            message_id=message_id,
            msg_id=facts.msg_id if facts else None,
            msg_type=facts.msg_type if facts else None,
            sender_her=facts.sender_her if facts else None,
            receiver_her=facts.receiver_her if facts else None,
            state=state,
        )

    # -- deliveries -------------------------------------------------------------------------

    def deliver_due(self, limit: int = 500) -> int:
        """Perform due deliveries: e-mails one by one, files as one batch (see
        ``transport.dir``); each is marked delivered only once it is durable."""
        due = self.store.due_deliveries(self.clock(), limit)
        done: list[int] = []
        files: list[tuple[DeliveryRow, dir_transport.FileDelivery]] = []
        directories: dict[str, Path] = {}
        groups = readable_by(self.settings)
        for d in due:
            metrics.child(metrics.delivery_attempts, metrics.transport_label(d.transport),
                          metrics.kind_label(d.kind)).inc()  # fmt: skip
            target = d.target or ""
            if d.transport == "hub" or (d.transport == "dir" and target):
                directory = (
                    self.settings.hub_outbox
                    if d.transport == "hub"
                    else (directories.get(target) or directories.setdefault(target, Path(target)))
                )
                group = self.settings.hub_group if d.transport == "hub" else groups.get(target)
                files.append((d, dir_transport.FileDelivery(directory, d.filename, d.payload, group)))
                continue
            try:
                if d.transport == "edi2":
                    self._send_edi2(d)
                elif d.transport == "smtp" and target:
                    smtp_transport.send_sync(self.smtp, target, d.filename, d.payload, _subject(d))
                else:
                    raise PermanentDeliveryError(
                        f"delivery {d.id} of message {d.message_id} goes by {d.destination}, which this daemon "
                        "cannot send; correct the configuration and `pfhjem-msg messages replay` the message"
                    )
            except (TransientDeliveryError, PermanentDeliveryError) as exc:
                self._delivery_failed(d, exc)
            else:
                done.append(d.id)
        results = dir_transport.write_batch([f for _, f in files])
        for (d, _), error in zip(files, results, strict=True):
            if error is None:
                done.append(d.id)
            else:
                self._delivery_failed(d, error)
        if done:
            for message_id, state in self.store.delivered(done, self.clock()):
                self._log(message_id, state, None)
        return len(due)

    def _send_edi2(self, d: DeliveryRow) -> None:
        """``POST /Messages``; the service's id is kept before the delivery is marked done.
        Refused credentials are transient here: the document waits until an operator fixes
        the HelseID client, and is then sent."""
        if self.edi2 is None:
            raise PermanentDeliveryError(
                f"delivery {d.id} is for the message service, but [intake.edi2] and [edi2.helseid] are not "
                "configured; configure them and `pfhjem-msg messages replay` the message"
            )
        try:
            service_id = edi2_transport.send(self.edi2, d.payload, d.her_id)
        except Edi2AuthError as exc:
            raise TransientDeliveryError(str(exc)) from exc
        self.store.edi2_sent(d.id, service_id, self.clock())
        log.info("delivery.edi2_sent", delivery_id=d.id, message_id=d.message_id, kind=d.kind, service_id=service_id,
                 her_id=d.her_id)  # fmt: skip

    def poll_edi2_receipts(self, limit: int = 200) -> int:
        """Read the receivers' AppRecs for what we sent through the message service into the
        same receipts (and the same 96-hour check) as AppRecs that come back through the hub.
        Returns how many came."""
        if self.edi2 is None:
            return 0
        now = self.clock()
        found = 0
        for d, service_id in self.store.edi2_awaiting_receipts(now - RECEIPT_WATCH, limit):
            if d.her_id is None:
                continue
            try:
                got = edi2_transport.receipt(self.edi2, service_id, d.her_id)
            except (Edi2AuthError, TransientDeliveryError) as exc:
                log.warning("receipt.edi2_unavailable", delivery_id=d.id, error_class=type(exc).__name__)
                return found  # the service is not answering: the next poll asks again
            except PermanentDeliveryError as exc:
                log.warning("receipt.edi2_refused", delivery_id=d.id, service_id=service_id,
                            error_class=type(exc).__name__)  # fmt: skip
                continue
            if got is None:
                continue
            status, errors = got
            hold = None
            if status != "1" and d.kind == "gp_copy":
                hold = f"the GP copy (MsgId {d.out_msg_id}) was rejected by its receiver: status {status} {errors}"
            self.store.record_receipt(d.id, status, errors, self.clock(), hold)
            found += 1
            log.info("receipt.edi2", delivery_id=d.id, message_id=d.message_id, status=status, errors=errors)
        return found

    def _delivery_failed(self, d: DeliveryRow, exc: TransientDeliveryError | PermanentDeliveryError) -> None:
        now = self.clock()
        permanent = "true" if isinstance(exc, PermanentDeliveryError) else "false"
        metrics.child(metrics.delivery_failures, metrics.transport_label(d.transport), metrics.kind_label(d.kind),
                      permanent).inc()  # fmt: skip
        retry_at = (
            self.policy.next_attempt(d.attempts + 1, now, self.rng)
            if isinstance(exc, TransientDeliveryError)
            else None
        )
        self.store.delivery_failed(d.id, str(exc), now, retry_at)
        # The class of what went wrong (the SMTP or OS exception under ours) and where: enough to
        # tell a refused address from a peer that is down without reading the store; the error
        # text stays in the store, as a peer's reply may quote anything.
        where = {"delivery_id": d.id, "message_id": d.message_id, "kind": d.kind, "attempt": d.attempts + 1,
                 "destination": d.destination, "error_class": type(exc.__cause__ or exc).__name__}  # fmt: skip
        if retry_at is None:
            log.error("delivery.failed", **where)
            self._log(d.message_id, "failed", None)
        else:
            log.warning("delivery.retry", **where, next_attempt_at=retry_at.isoformat(timespec="seconds"))

    # -- follow-ups --------------------------------------------------------------------------

    def sweep_followups(self) -> int:
        """Queue the follow-up reminders that are due today (Norwegian date). Which are due is
        decided here; each is built (and signed) in the workers, then queued once: after
        downtime only the one due now goes, so nothing is sent per missed tick. Returns how
        many were queued."""
        now = self.clock()
        today = local_date(now)
        jobs: list[ReminderJob] = []
        for f in self.store.open_followups(until=today):
            phase = due_phase(f, today, self.settings.followups.closing_reminder_days)
            if phase is None:
                continue
            found = reminder_recipient(self.settings, f.municipality)
            if found is None:
                log.error("followup.no_municipality", followup_id=f.id, municipality_configured=False)
                continue
            raw = self.store.raw(f.source_message_id) if reminder_as_dialog(found[1]) else None
            jobs.append(ReminderJob(f, phase, raw, now))
        if not jobs:
            return 0
        self.drafts.ready()
        queued = 0
        for job, spec in zip(jobs, self.drafts.remind(jobs), strict=True):
            f = job.followup
            if isinstance(spec, Crash):
                log.error("followup.reminder_error", followup_id=f.id, phase=job.phase,
                          message_id=f.source_message_id)  # fmt: skip
                continue
            if self.store.add_reminder(f.id, job.phase, spec, now):
                queued += 1
                log.info("followup.reminder", followup_id=f.id, point=f.point, phase=job.phase,
                         message_id=f.source_message_id)  # fmt: skip
        return queued

    def flag_overdue_receipts(self) -> int:
        """GP copies with no AppRec after 96 hours: an event each, once, for an operator."""
        now = self.clock()
        flagged = self.store.flag_overdue_receipts(now - APPREC_DEADLINE, now)
        for d in flagged:
            log.warning("receipt.overdue", delivery_id=d.id, message_id=d.message_id, out_msg_id=d.out_msg_id,
                        gp_her=d.her_id)  # fmt: skip
        return len(flagged)


def readable_by(settings: Settings) -> dict[str, str]:
    """Directory destination → the Unix group that may read what is delivered there."""
    return {
        str(dest.path): dest.group
        for m in settings.municipalities
        for dest in (m.case_unit, m.default, m.kreftkoordinator)
        if dest is not None and dest.transport == "dir" and dest.group
    }


def _subject(d: DeliveryRow) -> str:
    """Ids only: mail subjects pass through systems that are not for patient data."""
    if d.kind == "reminder":
        return f"Pakkeforløp hjem: påminnelse ({d.phase}), oppfølging {d.followup_id}"
    return f"{d.kind} {d.filename}"
