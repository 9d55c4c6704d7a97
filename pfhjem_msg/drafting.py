"""The pure part of processing one message: stored bytes → a drafted change.

Reading, validating, classifying, routing and building the AppRec and GP copy need nothing
but the bytes, the settings and the time, so they can run in worker processes (see
``workers.py``). What needs the store (is this a duplicate? which of our messages does this
AppRec answer?) is left to the pipeline as a question in the draft.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Literal

from pfhjem_msg.config import Destination, Municipality, Settings
from pfhjem_msg.decision import MessageDecision, decide
from pfhjem_msg.followups import Followup, FollowupFacts, Phase, reminder_text
from pfhjem_msg.gpregistry import GPRegistry
from pfhjem_msg.kith import gpcopy
from pfhjem_msg.kith.model import AppRecPayload
from pfhjem_msg.kith.schemas import load_schema_set
from pfhjem_msg.kith.verdict import Options, Verdict, examine
from pfhjem_msg.lifecycle import Transport
from pfhjem_msg.logs import mask_national_ids
from pfhjem_msg.pathway import Matcher
from pfhjem_msg.store.base import Change, DeliverySpec, Facts, Transition


@dataclass(frozen=True)
class ReceiptQuestion:
    """An AppRec we received: the pipeline looks up what of ours it answers."""

    original_msg_id: str | None
    status: str
    errors: str


@dataclass(frozen=True)
class Draft:
    change: Change
    """What to commit when neither question below changes it."""
    parsed: Transition | None = None
    duplicate_of: tuple[str, str | None] | None = None
    """(MsgId, sender HER-id): if an earlier message has these, this one is a duplicate."""
    receipt: ReceiptQuestion | None = None


@dataclass(frozen=True)
class Crash:
    """Drafting raised: a bug. The reason names the exception and where, never the payload."""

    reason: str


@dataclass(frozen=True)
class ReminderJob:
    """A reminder the follow-up sweep found due, with what building it needs from the store."""

    followup: Followup
    phase: Phase
    original: bytes | None
    """The source message's stored original, for a reminder that goes as a Dialogmelding (it
    names the patient the way the original did); None for a plain-text one."""
    now: datetime


def reminder_recipient(settings: Settings, municipality: str) -> tuple[Municipality, Destination] | None:
    """Who a follow-up's reminders go to: the municipality's kreftkoordinator, or its case unit."""
    m = next((m for m in settings.municipalities if m.name == municipality), None)
    if m is None:
        return None
    return m, m.kreftkoordinator or m.case_unit


def reminder_as_dialog(to: Destination) -> bool:
    """A reminder to the hub or through the message service is a signed Dialogmelding; to a
    directory or an e-mail address, plain text."""
    return to.transport in ("hub", "edi2")


class Drafter:
    """Everything drafting needs, built from the settings it is handed (in a worker: the
    daemon's own, pickled), never from the configuration file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = GPRegistry(settings.gp_registry) if settings.gp_registry else None
        self.matcher = Matcher(settings.pathway)
        self.options = Options(
            schemas=load_schema_set(settings.kith.schemas),
            limits=settings.kith.limits,
            trust_anchors=settings.kith.trust_anchors,
            crl_dir=settings.kith.crl_dir,
            require_signature=settings.kith.require_signature,
            senders=settings.kith.senders,
        )

    def safe_draft(self, raw: bytes, message_id: int, now: datetime) -> Draft | Crash:
        try:
            return self.draft(raw, message_id, now)
        except Exception as exc:  # a bug: the reason goes into the message's history
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:300]
            where = traceback.extract_tb(exc.__traceback__)[-1]
            return Crash(f"processing failed ({detail} at {Path(where.filename).name}:{where.lineno})")

    def safe_reminder(self, job: ReminderJob) -> DeliverySpec | Crash:
        try:
            return self.reminder(job)
        except Exception as exc:  # a bug: the sweep logs it and tries again next time
            where = traceback.extract_tb(exc.__traceback__)[-1]
            return Crash(f"drafting the reminder failed ({type(exc).__name__} at "
                         f"{Path(where.filename).name}:{where.lineno})")  # fmt: skip

    def reminder(self, job: ReminderJob) -> DeliverySpec:
        """The reminder as a delivery of its source message: built (and signed) once, so a
        retry sends exactly the same bytes."""
        f, phase, now = job.followup, job.phase, job.now
        found = reminder_recipient(self.settings, f.municipality)
        if found is None:
            raise LookupError(f"municipality of follow-up {f.id} is not configured")
        m, to = found
        name = f"reminder-{f.id}-sp{f.point}-{phase}"
        text = reminder_text(f, phase, "pfhjem-msg")
        if not reminder_as_dialog(to) or job.original is None:
            return DeliverySpec("reminder", to.transport, f"{name}.txt", text.encode("utf-8"), to.her_id,
                                target=to.target, followup_id=f.id, phase=phase)  # fmt: skip
        original = examine(job.original, f"message {f.source_message_id}", self.options).message
        sender = gpcopy.Party(m.name, m.her_ids[0], m.case_unit.name, m.case_unit.her_id)
        receiver = gpcopy.Unit(m.name, m.her_ids[0], to.name, to.her_id)
        out_id, xml = gpcopy.build_dialog(sender, receiver, original.patient if original else None, text, now,
                                          signing=self.settings.kith.signing)  # fmt: skip
        via: Transport = "edi2" if to.transport == "edi2" or self.settings.send_via == "edi2" else "hub"
        return DeliverySpec("reminder", via, f"{name}-{out_id}.xml", xml, to.her_id, out_id, followup_id=f.id,
                            phase=phase)  # fmt: skip

    def draft(self, raw: bytes, message_id: int, now: datetime) -> Draft:
        verdict = examine(raw, f"message {message_id}", self.options)
        result = decide(verdict, self.settings, self.registry, self.matcher)
        msg = verdict.message
        facts = Facts(
            msg_id=verdict.msg_id,
            msg_type=verdict.msg_type,
            sender_her=msg.sender.lowest_her_id if msg and msg.sender else None,
            receiver_her=msg.receiver.lowest_her_id if msg and msg.receiver else None,
            marked=bool(result.facts and result.facts.detection.marked) if msg else None,
        )
        change = Change(message_id, [], facts=facts)
        if msg is None or verdict.salvaged:
            return Draft(self._unreadable(verdict, result, change))
        parsed = Transition(
            "parsed",
            f"{verdict.standard} {verdict.msg_type or '-'}, MsgId {mask_national_ids(verdict.msg_id or '-')}",
        )
        if msg.is_apprec:
            assert isinstance(msg.payload, AppRecPayload)
            refused = sorted({code for i in verdict.issues
                              if i.severity == "error" and (code := i.apprec_code) and code.startswith("S")})  # fmt: skip
            if refused:
                # An AppRec whose signature does not hold (or is missing where one is required)
                # would otherwise settle what we sent on the word of whoever wrote it.
                reason = (f"AppRec not taken as a receipt: its signature does not hold ({', '.join(refused)}); "
                          "check with the sender, then discard it or have it sent again")  # fmt: skip
                return Draft(replace(change, steps=[parsed, Transition("held", reason)]))
            payload = msg.payload
            question = ReceiptQuestion(
                payload.original_msg_id,
                payload.status.value if payload.status else "?",
                " ".join(e.value for e in payload.errors),
            )
            return Draft(replace(change, steps=[parsed]), parsed, receipt=question)
        detection = result.facts.detection if result.facts else None
        classified = Transition(
            "classified",
            "marked Pakkeforløp hjem ("
            + ", ".join(sorted({f"{m.rule} at {m.where}" for m in detection.matches}))
            + ")"
            if detection and detection.marked
            else f"not marked: {detection.not_marked_reason if detection else '-'}",
        )
        duplicate_key = (verdict.msg_id, facts.sender_her) if verdict.msg_id else None
        deliveries = _apprec_delivery(result, message_id)
        routing = result.routing
        if routing.action == "reject":
            steps = [parsed, classified, Transition("routed", routing.reason)]
            return Draft(replace(change, steps=steps, deliveries=deliveries, on_delivered="rejected"), parsed,
                         duplicate_key)  # fmt: skip
        if routing.action == "hold":
            steps = [parsed, classified, Transition("held", routing.reason)]
            return Draft(replace(change, steps=steps, deliveries=deliveries), parsed, duplicate_key)
        deliveries += self._recipient_deliveries(result, raw, message_id, now)
        summary = "; ".join(
            f"{r.role} {r.her_id or ''} via {r.destination}".replace("  ", " ") for r in routing.recipients
        )
        notes = f" ({'; '.join(routing.notes)})" if routing.notes else ""
        routed = Transition("routed", f"{routing.reason}: {summary or 'no recipients'}{notes}")
        steps = [parsed, classified, routed]
        plan = followup_facts(result)
        return Draft(
            replace(change, steps=steps, deliveries=deliveries, followup=plan), parsed, duplicate_key
        )

    def _unreadable(self, verdict: Verdict, result: MessageDecision, change: Change) -> Change:
        codes = ", ".join(i.code for i in verdict.issues if i.severity == "error")[:200]
        deliveries = _apprec_delivery(result, change.message_id)
        if deliveries:
            reason = f"cannot be read ({codes}); negative AppRec to the sender"
            return replace(change, steps=[Transition("routed", reason)], deliveries=deliveries,
                           on_delivered="rejected")  # fmt: skip
        reason = (
            f"cannot be read ({codes}) and no sender to answer; an operator must contact the hub or sender"
        )
        return replace(change, steps=[Transition("held", reason)])

    def _recipient_deliveries(self, result: MessageDecision, raw: bytes, message_id: int,
                              now: datetime) -> list[DeliverySpec]:  # fmt: skip
        msg = result.verdict.message
        assert msg is not None
        out: list[DeliverySpec] = []
        extension = "xml" if raw.lstrip()[:1] in (b"<", b"\xef") else "eml"
        for r in result.routing.recipients:
            role = r.role
            if role != "gp" and r.transport == "edi2" and r.her_id:
                out.append(self._forward(result, role, r.name, r.her_id, message_id, now))
            elif role != "gp":
                name = f"{message_id}-{(msg.msg_id or 'unknown')[:64]}.{extension}"
                out.append(
                    DeliverySpec(role, r.transport, name, b"", r.her_id, original=True, target=r.target)
                )
            elif r.her_id and r.office_her_id:
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

    def _forward(self, result: MessageDecision, role: Literal["case_unit", "default"], name: str, her_id: str, message_id: int,
                 now: datetime) -> DeliverySpec:  # fmt: skip
        """A unit reached through the message service by its HER-id gets a Dialogmelding
        forwarded to it, built like the GP copy (the text and the PDF/image attachments): the
        original names us as its receiver, and the service delivers a document only to the
        receivers it names."""
        msg, municipality = result.verdict.message, result.routing.municipality
        assert msg is not None and municipality is not None
        receiver = gpcopy.Unit(municipality.name, municipality.her_ids[0], name, her_id)
        sender = gpcopy.Party(municipality.name, municipality.her_ids[0], municipality.name, None)
        out_id, xml = gpcopy.build(
            msg, sender, receiver, now, result.verdict.root, self.settings.kith.signing
        )
        return DeliverySpec(role, "edi2", f"{role}-{message_id}-{out_id}.xml", xml, her_id, out_id)


def followup_facts(result: MessageDecision) -> FollowupFacts | None:
    """What a routed message means for the follow-up plan: only marked messages that name a
    patient count; the pathway's lifecycle says whether it plans, closes or cancels."""
    msg, facts, municipality = result.verdict.message, result.facts, result.routing.municipality
    if msg is None or facts is None or not facts.detection.marked or municipality is None:
        return None
    if not facts.patient_named:
        return None
    ident = msg.patient.national_id if msg.patient else None
    point = int(facts.contact_point.value)  # type: ignore[call-overload]
    anchor, kind = None, None
    if facts.followups:
        kind = facts.followups[0].anchor
        if kind == "diagnosis" and facts.diagnosis is not None:
            anchor = facts.diagnosis.value
        elif msg.gen_datetime is not None:
            anchor = msg.gen_datetime.date()
    return FollowupFacts(
        municipality=municipality.name,
        patient_id=ident.id.strip() if ident else None,
        contact_point=point,
        anchor=anchor if isinstance(anchor, date) else None,
        anchor_kind=kind,
        windows=tuple((w.point, w.start, w.end) for w in facts.followups),
        lifecycle=facts.lifecycle or "start",
    )


def _apprec_delivery(result: MessageDecision, message_id: int) -> list[DeliverySpec]:
    a = result.apprec
    if not a.due or a.xml is None:
        return []
    return [DeliverySpec("apprec", "hub", f"apprec-{message_id}-{a.apprec_id}.xml", a.xml, None, a.apprec_id)]


def _sender(m: Municipality) -> gpcopy.Party:
    return gpcopy.Party(m.name, m.her_ids[0], m.case_unit.name, m.case_unit.her_id)
