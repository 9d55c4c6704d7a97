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
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from pfhjem_msg.config import Municipality, Settings
from pfhjem_msg.decision import MessageDecision, decide
from pfhjem_msg.errors import PermanentDeliveryError, TransientDeliveryError
from pfhjem_msg.gpregistry import GPRegistry
from pfhjem_msg.kith import gpcopy
from pfhjem_msg.kith.model import AppRecPayload
from pfhjem_msg.kith.schemas import load_schema_set
from pfhjem_msg.kith.verdict import Options, Verdict, examine
from pfhjem_msg.logs import get_logger
from pfhjem_msg.retry import RetryPolicy
from pfhjem_msg.store.base import DeliveryRow, DeliverySpec, State, Store, Transition
from pfhjem_msg.transport import dir as dir_transport
from pfhjem_msg.transport import smtp as smtp_transport

APPREC_DEADLINE = timedelta(hours=96)
log = get_logger("pfhjem_msg.pipeline")


@dataclass
class Outcome:
    """What processing one message decided; applied to the store in one transaction."""

    steps: list[Transition]
    deliveries: list[DeliverySpec] = field(default_factory=list)
    on_delivered: State = "done"
    receipt: tuple[int, str, str, str | None] | None = None
    """(delivery id, status, error codes, hold reason) for an AppRec we received."""
    facts: dict[str, object] = field(default_factory=dict)


class Pipeline:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Callable[[], datetime],
        policy: RetryPolicy | None = None,
        smtp: smtp_transport.SmtpSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.smtp = smtp or smtp_transport.SmtpSettings()
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not security)
        self.registry = GPRegistry(settings.gp_registry) if settings.gp_registry else None
        self.options = Options(
            schemas=load_schema_set(settings.kith.schemas),
            limits=settings.kith.limits,
            trust_anchors=settings.kith.trust_anchors,
        )

    # -- messages ----------------------------------------------------------------------------

    def process_due(self, limit: int = 200) -> int:
        ids = self.store.due_messages(self.clock(), limit)
        for message_id in ids:
            self.process(message_id)
        return len(ids)

    def process(self, message_id: int) -> None:
        now = self.clock()
        attempts = self.store.begin_attempt(message_id, now)
        if attempts > self.policy.pipeline_attempts:
            reason = f"processing crashed or failed {attempts - 1} times; see the earlier events"
            self.store.transition(message_id, [Transition("failed", reason)], now)
            self._log(message_id, "failed", reason)
            return
        try:
            outcome = self._decide(message_id, now)
        except Exception as exc:  # a bug: keep the traceback in the history, try again later
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:300]
            where = traceback.extract_tb(exc.__traceback__)[-1]
            reason = f"processing failed ({detail} at {Path(where.filename).name}:{where.lineno}); will retry"
            retry_at = now + self.policy.delay(attempts, self.rng)
            self.store.postpone(message_id, retry_at, reason, now)
            log.error("message.error", message_id=message_id, attempt=attempts, error=type(exc).__name__)
            return
        if outcome.facts:
            self.store.record_facts(message_id, **outcome.facts)  # type: ignore[arg-type]
        if outcome.receipt is not None:
            delivery_id, status, errors, hold = outcome.receipt
            self.store.record_receipt(delivery_id, status, errors, now, hold)
        self.store.transition(
            message_id, outcome.steps, now, outcome.deliveries, on_delivered=outcome.on_delivered
        )
        self._log(message_id, outcome.steps[-1].to_state, None)

    def _log(self, message_id: int, state: str, reason: str | None) -> None:
        row = self.store.message(message_id)
        log.info(
            "message.transition",
            message_id=message_id,
            msg_id=row.msg_id if row else None,
            msg_type=row.msg_type if row else None,
            sender_her=row.sender_her if row else None,
            receiver_her=row.receiver_her if row else None,
            state=state,
        )

    def _decide(self, message_id: int, now: datetime) -> Outcome:
        raw = self.store.raw(message_id)
        verdict = examine(raw, f"message {message_id}", self.options)
        result = decide(verdict, self.settings, self.registry)
        msg = verdict.message
        facts: dict[str, object] = {
            "msg_id": verdict.msg_id,
            "msg_type": verdict.msg_type,
            "sender_her": msg.sender.lowest_her_id if msg and msg.sender else None,
            "receiver_her": msg.receiver.lowest_her_id if msg and msg.receiver else None,
            "marked": bool(result.facts and result.facts.detection.marked) if msg else None,
        }
        if msg is None or verdict.salvaged:
            return self._unreadable(verdict, result, message_id, facts)
        parsed = Transition(
            "parsed", f"{verdict.standard} {verdict.msg_type or '-'}, MsgId {verdict.msg_id or '-'}"
        )
        if msg.is_apprec:
            return self._receipt(verdict, parsed, facts)
        if verdict.msg_id:
            earlier = self.store.find_duplicate(message_id, verdict.msg_id, facts["sender_her"])  # type: ignore[arg-type]
            if earlier is not None:
                reason = (
                    f"same MsgId from the same sender as message {earlier}: processed once, acknowledged once"
                )
                return Outcome([parsed, Transition("duplicate", reason)], facts=facts)
        detection = result.facts.detection if result.facts else None
        classified = Transition(
            "classified",
            "marked Pakkeforløp hjem ("
            + ", ".join(sorted({f"{m.rule} at {m.where}" for m in detection.matches}))
            + ")"
            if detection and detection.marked
            else f"not marked: {detection.not_marked_reason if detection else '-'}",
        )
        deliveries = self._apprec_delivery(result, message_id)
        routing = result.routing
        if routing.action == "reject":
            routed = Transition("routed", routing.reason)
            return Outcome([parsed, classified, routed], deliveries, "rejected", facts=facts)
        if routing.action == "hold":
            return Outcome([parsed, classified, Transition("held", routing.reason)], deliveries, facts=facts)
        deliveries += self._recipient_deliveries(result, raw, message_id, now)
        summary = "; ".join(
            f"{r.role} {r.her_id or ''} via {r.transport}".replace("  ", " ") for r in routing.recipients
        )
        notes = f" ({'; '.join(routing.notes)})" if routing.notes else ""
        routed = Transition("routed", f"{routing.reason}: {summary or 'no recipients'}{notes}")
        return Outcome([parsed, classified, routed], deliveries, facts=facts)

    def _unreadable(self, verdict: Verdict, result: MessageDecision, message_id: int,
                    facts: dict[str, object]) -> Outcome:  # fmt: skip
        codes = ", ".join(i.code for i in verdict.issues if i.severity == "error")[:200]
        deliveries = self._apprec_delivery(result, message_id)
        if deliveries:
            reason = f"cannot be read ({codes}); negative AppRec to the sender"
            return Outcome([Transition("routed", reason)], deliveries, "rejected", facts=facts)
        reason = (
            f"cannot be read ({codes}) and no sender to answer; an operator must contact the hub or sender"
        )
        return Outcome([Transition("held", reason)], facts=facts)

    def _receipt(self, verdict: Verdict, parsed: Transition, facts: dict[str, object]) -> Outcome:
        msg = verdict.message
        assert msg is not None and isinstance(msg.payload, AppRecPayload)
        payload = msg.payload
        status = payload.status.value if payload.status else "?"
        errors = " ".join(e.value for e in payload.errors)
        ours = self.store.outgoing(payload.original_msg_id) if payload.original_msg_id else None
        if ours is None:
            reason = f"AppRec (status {status}) for MsgId {payload.original_msg_id}, which we did not send"
            return Outcome([parsed, Transition("done", reason)], facts=facts)
        hold = None
        if status != "1" and ours.kind == "gp_copy":
            hold = f"the GP copy (MsgId {ours.out_msg_id}) was rejected by its receiver: status {status} {errors}"
        reason = f"AppRec status {status} {errors} for our {ours.kind} of message {ours.message_id}".strip()
        return Outcome(
            [parsed, Transition("done", reason)], receipt=(ours.id, status, errors, hold), facts=facts
        )

    def _apprec_delivery(self, result: MessageDecision, message_id: int) -> list[DeliverySpec]:
        a = result.apprec
        if not a.due or a.xml is None:
            return []
        return [
            DeliverySpec("apprec", "hub", f"apprec-{message_id}-{a.apprec_id}.xml", a.xml, None, a.apprec_id)
        ]

    def _recipient_deliveries(self, result: MessageDecision, raw: bytes, message_id: int,
                              now: datetime) -> list[DeliverySpec]:  # fmt: skip
        msg = result.verdict.message
        assert msg is not None
        out: list[DeliverySpec] = []
        extension = "xml" if raw.lstrip()[:1] in (b"<", b"\xef") else "eml"
        for r in result.routing.recipients:
            if r.role in ("case_unit", "default"):
                name = f"{message_id}-{(msg.msg_id or 'unknown')[:64]}.{extension}"
                out.append(DeliverySpec(r.role, r.transport, name, raw, r.her_id))
            elif r.role == "gp" and r.her_id and r.office_her_id:
                municipality = result.routing.municipality
                assert municipality is not None
                out_id, xml = gpcopy.build(
                    msg,
                    _sender(municipality),
                    gpcopy.GPAddress(r.office_name or "Legekontor", r.office_her_id, r.name, r.her_id),
                    now,
                    result.verdict.root,
                    self.settings.kith.signing,
                )
                out.append(
                    DeliverySpec("gp_copy", "hub", f"gpcopy-{message_id}-{out_id}.xml", xml, r.her_id, out_id)
                )
        return out

    # -- deliveries -------------------------------------------------------------------------

    def deliver_due(self, limit: int = 500) -> int:
        due = self.store.due_deliveries(self.clock(), limit)
        done: list[int] = []
        for d in due:
            try:
                self._perform(d)
            except TransientDeliveryError as exc:
                self._flush(done)
                now = self.clock()
                retry_at = self.policy.next_attempt(d.attempts + 1, now, self.rng)
                self.store.delivery_failed(d.id, str(exc), now, retry_at)
                if retry_at is None:
                    self._log(d.message_id, "failed", None)
                log.warning("delivery.retry" if retry_at else "delivery.failed", delivery_id=d.id,
                            message_id=d.message_id, kind=d.kind, attempt=d.attempts + 1)  # fmt: skip
            except PermanentDeliveryError as exc:
                self._flush(done)
                self.store.delivery_failed(d.id, str(exc), self.clock(), None)
                log.error("delivery.failed", delivery_id=d.id, message_id=d.message_id, kind=d.kind)
                self._log(d.message_id, "failed", None)
            else:
                done.append(d.id)
        self._flush(done)
        return len(due)

    def _flush(self, done: list[int]) -> None:
        if done:
            for message_id, state in self.store.delivered(done, self.clock()):
                self._log(message_id, state, None)
            done.clear()

    def _perform(self, d: DeliveryRow) -> None:
        kind, _, target = d.destination.partition(":")
        if kind == "hub":
            dir_transport.write_atomic(self.settings.hub_outbox, d.filename, d.payload)
        elif kind == "dir":
            dir_transport.write_atomic(Path(target), d.filename, d.payload)
        elif kind == "smtp":
            subject = f"{d.kind} {d.filename}"
            smtp_transport.send_sync(self.smtp, target, d.filename, d.payload, subject)
        else:
            raise PermanentDeliveryError(f"unknown transport {kind!r} for delivery {d.id}")

    def flag_overdue_receipts(self) -> int:
        """GP copies with no AppRec after 96 hours: an event each, once, for an operator."""
        count = 0
        for d in self.store.overdue_receipts(self.clock() - APPREC_DEADLINE):
            count += 1
            log.warning("receipt.overdue", delivery_id=d.id, message_id=d.message_id, out_msg_id=d.out_msg_id)
        return count


def _sender(m: Municipality) -> gpcopy.Party:
    return gpcopy.Party(m.name, m.her_ids[0], m.case_unit.name, m.case_unit.her_id)
