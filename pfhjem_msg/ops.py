"""The operator's verbs on stored messages: look, hold, release, discard, replay, status,
prune. The rules live here (which state allows what, what a replay re-sends); the store does
each change in one transaction; ``cli_ops`` only parses and prints.

Every change is an event with the actor ``ops:<os user>`` and the operator's reason, and an
audit entry. A replay re-queues the message for the daemon; it never sends anything itself,
and it never makes the daemon send a second AppRec for the same received message.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pfhjem_msg.errors import NoSuchMessage, OperatorRefused
from pfhjem_msg.followups import local_date
from pfhjem_msg.intake.spool import Claimed, claimed_waiting
from pfhjem_msg.kith.apprec import apprec_status
from pfhjem_msg.kith.crl import crl_warnings
from pfhjem_msg.kith.verdict import examine
from pfhjem_msg.lifecycle import DISCARDABLE, FORCED_REPLAY, HOLDABLE, RELEASABLE, REPLAYABLE, replay_mode
from pfhjem_msg.logs import mask_national_ids
from pfhjem_msg.store.base import (
    ClaimHolder,
    DeliveryInfo,
    Edi2IntakeFacts,
    Edi2Link,
    Event,
    MessageFilter,
    MessageRow,
    OperatorStore,
    RefusedFile,
    StatusFacts,
)

HOUR = timedelta(hours=1)
RECEIPT_DEADLINE = timedelta(hours=96)
CLAIMED_STUCK = timedelta(minutes=5)
"""A spool file claimed this long ago and still not stored: the store cannot take it."""


def operator() -> str:
    """``ops:<os user>``: who did it, for the events and the audit trail."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = f"uid{os.getuid()}"
    return f"ops:{user}"


def find(store: OperatorStore, ident: str) -> int:
    """Our id or a MsgId → one message id; an OperatorRefused that says what to do otherwise."""
    ids = store.resolve(ident)
    if not ids:
        raise OperatorRefused(
            f"no message has the id or MsgId {ident!r}; list them with `pfhjem-msg messages list`"
        )
    if len(ids) > 1:
        listed = ", ".join(map(str, ids[:10]))
        raise OperatorRefused(f"MsgId {ident!r} belongs to messages {listed}: give our id instead")
    return ids[0]


# -- looking -----------------------------------------------------------------------------------


@dataclass
class MessageView:
    row: MessageRow
    events: list[Event]
    deliveries: list[DeliveryInfo]
    apprec_sent: str | None
    """Status and codes of the AppRec we sent for it («1», «2 E36»), if any."""
    replay_of: int | None
    replays: list[int]
    patient: dict[str, str | None] | None = None
    edi2: list[Edi2Link] = field(default_factory=list)
    """The message service messages that brought it."""

    def as_dict(self) -> dict[str, Any]:
        r = self.row
        out: dict[str, Any] = {
            "id": r.id,
            "state": r.state,
            "reason": r.state_reason,
            "received_at": r.received_at.isoformat(),
            "source": r.source,
            "msg_id": shown_id(r.msg_id),
            "msg_type": r.msg_type,
            "sender_her": shown_id(r.sender_her),
            "receiver_her": shown_id(r.receiver_her),
            "marked": r.marked,
            "pruned": r.pruned,
            "apprec_sent": self.apprec_sent,
            "events": [
                {
                    "at": e.at.isoformat(),
                    "actor": e.actor,
                    "from": e.from_state,
                    "to": e.to_state,
                    "reason": e.reason,
                }
                for e in self.events
            ],
            "deliveries": [_delivery_dict(d) for d in self.deliveries],
            "lineage": {"replay_of": self.replay_of, "replays": self.replays},
            "edi2": [
                {
                    "service_id": e.service_id,
                    "receiver_her": e.receiver_her,
                    "is_apprec": e.is_apprec,
                    "apprec": e.apprec,
                    "apprec_service_id": e.apprec_service_id,
                    "read_at": _iso(e.read_at),
                    "held": e.held,
                }
                for e in self.edi2
            ],
        }
        if self.patient is not None:
            out["patient"] = self.patient
        return out


def shown_id(value: str | None) -> str | None:
    """An identifier the sender wrote (MsgId, HER-id) as operators see it: a national id in it is
    masked. The store keeps it as sent, since duplicates are matched on it."""
    return mask_national_ids(value) if value else value


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _delivery_dict(d: DeliveryInfo) -> dict[str, Any]:
    return {
        "id": d.id,
        "kind": d.kind,
        "followup_id": d.followup_id,
        "phase": d.phase,
        "destination": d.destination,
        "transport": d.transport,
        "target": d.target,
        "her_id": d.her_id,
        "out_msg_id": d.out_msg_id,
        "status": d.status,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "next_attempt_at": _iso(d.next_attempt_at),
        "delivered_at": _iso(d.delivered_at),
        "receipt": None
        if d.receipt_status is None
        else {"status": d.receipt_status, "errors": d.receipt_errors, "at": _iso(d.receipt_at)},
        "receipt_overdue_since": _iso(d.receipt_overdue_at),
        "service_id": d.service_id,
    }


def show(
    store: OperatorStore, message_id: int, show_patient: bool = False, now: datetime | None = None
) -> MessageView:
    row = store.message(message_id)
    if row is None:
        raise NoSuchMessage(message_id)
    sent = next(
        (d for d in store.deliveries(message_id) if d.kind == "apprec" and d.status == "delivered"), None
    )
    replay_of, replays = store.lineage(message_id)
    view = MessageView(
        row,
        store.events(message_id),
        store.delivery_info(message_id),
        apprec_status(sent.payload) if sent else None,
        replay_of,
        replays,
        edi2=store.edi2_links(message_id),
    )
    if show_patient:
        view.patient = patient_of(store, row)
        store.audit(operator(), "show patient", message_id, "messages show --show-patient", now or _now())
    return view


def patient_of(store: OperatorStore, row: MessageRow) -> dict[str, str | None]:
    """Name and national id from the stored original (only for ``--show-patient``)."""
    if row.pruned:
        return {"name": None, "national_id": None, "note": "original deleted by retention"}
    msg = examine(store.raw(row.id), f"message {row.id}").message
    p = msg.patient if msg else None
    if p is None:
        return {"name": None, "national_id": None}
    name = " ".join(x for x in (p.given_name, p.middle_name, p.family_name) if x) or None
    ident = p.national_id
    return {"name": name, "national_id": ident.id if ident else None}


def _now() -> datetime:
    return datetime.now(UTC)


# -- changing by hand --------------------------------------------------------------------------


def hold(store: OperatorStore, message_id: int, reason: str, now: datetime) -> str:
    _need_reason(reason, "hold")
    _expect(store, message_id, HOLDABLE, "held", "only a message still being processed can be held")
    return store.operator_transition(message_id, allowed=HOLDABLE, to_state="held", actor=operator(),
                                     reason=reason, now=now, remember_held_from=True)  # fmt: skip


def release(store: OperatorStore, message_id: int, reason: str, now: datetime) -> str:
    _expect(store, message_id, RELEASABLE, "released", "only a held message can be released")
    return store.operator_transition(message_id, allowed=RELEASABLE, to_state=None, actor=operator(),
                                     reason=reason or "released", now=now)  # fmt: skip


def discard(store: OperatorStore, message_id: int, reason: str, now: datetime) -> str:
    _need_reason(reason, "discard")
    allowed = DISCARDABLE
    _expect(store, message_id, allowed, "discarded", "a finished message has nothing left to discard")
    return store.operator_transition(message_id, allowed=allowed, to_state="discarded", actor=operator(),
                                     reason=reason, now=now, cancel_pending=True)  # fmt: skip


def _need_reason(reason: str, verb: str) -> None:
    if not reason.strip():
        raise OperatorRefused(
            f"{verb} needs --reason: say why, for the message's history and the audit trail"
        )


def _expect(store: OperatorStore, message_id: int, allowed: frozenset[str], verb: str, why: str) -> None:
    row = store.message(message_id)
    if row is None:
        raise NoSuchMessage(message_id)
    if row.state not in allowed:
        raise OperatorRefused(f"message {message_id} is {row.state} and cannot be {verb}: {why}")


# -- replay ------------------------------------------------------------------------------------

Mode = Literal["deliveries", "from_start", "new_message"]


@dataclass
class ReplayPlan:
    message_id: int
    state: str
    mode: Mode
    resend: list[str] = field(default_factory=list)
    """Kinds of deliveries not yet delivered that the replay sends (or may send)."""
    apprec_note: str | None = None
    new_message: int | None = None

    def describe(self) -> str:
        what = {
            "deliveries": "retry its failed deliveries",
            "from_start": "process it again from the stored original",
            "new_message": "process it again as a new message, delivering once more",
        }[self.mode]
        label = "delivers again" if self.mode == "new_message" else "not yet delivered"
        resend = f"; {label}: {', '.join(self.resend)}" if self.resend else ""
        note = f"; {self.apprec_note}" if self.apprec_note else ""
        return f"message {self.message_id} ({self.state}): {what}{resend}{note}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "state": self.state,
            "mode": self.mode,
            "resend": self.resend,
            "apprec": self.apprec_note,
            "new_message": self.new_message,
        }


def plan_replay(store: OperatorStore, message_id: int, from_start: bool, force_duplicate: bool) -> ReplayPlan:
    row = store.message(message_id)
    if row is None:
        raise NoSuchMessage(message_id)
    deliveries = store.deliveries(message_id)
    failed_deliveries: list[str] = [d.kind for d in deliveries if d.status == "failed"]
    mode = replay_mode(message_id, row.state, pruned=row.pruned, has_failed_deliveries=bool(failed_deliveries),
                       from_start=from_start, force_duplicate=force_duplicate)  # fmt: skip
    undelivered: list[str] = [d.kind for d in deliveries if d.status not in ("delivered", "cancelled")]
    sent = store.apprec_sent(message_id)
    note = (
        f"AppRec already sent (status {apprec_status(sent.payload)}); it is not sent again" if sent else None
    )
    if mode == "new_message":
        return ReplayPlan(
            message_id, row.state, mode, [d.kind for d in deliveries if d.kind != "apprec"], note
        )
    if mode == "deliveries":
        return ReplayPlan(message_id, row.state, mode, failed_deliveries, note)
    return ReplayPlan(message_id, row.state, "from_start", undelivered, note)


def replay(store: OperatorStore, plan: ReplayPlan, reason: str, now: datetime) -> ReplayPlan:
    why = reason or "replayed by an operator"
    allowed = frozenset({plan.state})
    if plan.mode == "new_message":
        plan.new_message = store.replay_as_new(plan.message_id, operator(), why, now)
    elif plan.mode == "deliveries":
        store.operator_transition(plan.message_id, allowed=allowed, to_state="routed", actor=operator(),
                                  reason=f"replay of the failed deliveries: {why}", now=now,
                                  retry_failed=True)  # fmt: skip
    else:
        store.operator_transition(plan.message_id, allowed=allowed, to_state="received", actor=operator(),
                                  reason=f"replay from the start: {why}", now=now, redraft=True)  # fmt: skip
    return plan


def select(store: OperatorStore, f: MessageFilter) -> list[int]:
    """Bulk selection: refuses a filter that names no state, so nothing is replayed by accident."""
    if not f.states:
        raise OperatorRefused("a bulk replay needs --state (failed, rejected or held) and may add filters")
    odd = set(f.states) - (REPLAYABLE | FORCED_REPLAY)
    if odd:
        raise OperatorRefused(f"messages in state {', '.join(sorted(odd))} cannot be replayed")
    return [r.id for r in store.list_messages(f)]


# -- status ------------------------------------------------------------------------------------


@dataclass
class Status:
    facts: StatusFacts
    now: datetime
    problems: list[str]
    followups: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per municipality: open (window ahead), due (window open), overdue (window passed)."""
    refused: list[RefusedFile] = field(default_factory=list)
    """Spool files refused and not yet acknowledged, newest first."""
    claimed: Claimed | None = None
    """Spool files taken but not yet stored (None: no spool configured)."""
    edi2: Edi2IntakeFacts | None = None
    """Intake from the message service (None: it has never run on this store)."""

    @property
    def held(self) -> int:
        """Held messages wait for a person, not for the daemon: they are counted on their own
        and never as unfinished, so a held message does not look like a stuck daemon."""
        return self.facts.counts.get("held", 0)

    def as_dict(self) -> dict[str, Any]:
        f = self.facts
        c = self.claimed
        age = (self.now - f.oldest_unfinished[1]).total_seconds() if f.oldest_unfinished else None
        waiting_age = (self.now - f.oldest_waiting_since).total_seconds() if f.oldest_waiting_since else None
        return {
            "counts": f.counts,
            "oldest_unfinished": None
            if f.oldest_unfinished is None
            else {
                "id": f.oldest_unfinished[0],
                "received_at": f.oldest_unfinished[1].isoformat(),
                "age_seconds": age,
            },
            "held": self.held,
            "last_intake": _iso(f.last_intake),
            "deliveries_waiting": f.deliveries_waiting,
            "oldest_delivery_waiting_seconds": waiting_age,
            "gp_copies_without_apprec_96h": f.receipts_overdue,
            "followups": self.followups,
            "refused_files": [
                {"id": r.id, "at": r.at.isoformat(), "name": r.name, "reason": r.reason, "size": r.size}
                for r in self.refused
            ],
            "spool_claimed": None
            if c is None
            else {
                "waiting": c.count,
                "oldest_seconds": None if c.oldest is None else max(0.0, self.now.timestamp() - c.oldest),
                "error": c.error,
            },
            "edi2_intake": None
            if self.edi2 is None
            else {
                "failing": self.edi2.failing_since is not None,
                "failing_since": _iso(self.edi2.failing_since),
                "auth_failing": self.edi2.auth_failing,
                "last_error": self.edi2.last_error,
                "last_success": _iso(self.edi2.last_success),
                "held": self.edi2.held,
                "unsettled": self.edi2.unsettled,
            },
            "claims": [
                {
                    "daemon": c.daemon,
                    "messages": c.messages,
                    "deliveries": c.deliveries,
                    "latest_lease_until": _iso(c.latest_until),
                    "expired": c.expired,
                }
                for c in f.claims
            ],
            "claims_expired": f.claims_expired,
            "needs_operator": bool(self.problems),
            "problems": self.problems,
        }


def status(
    store: OperatorStore,
    now: datetime,
    crl_dir: Path | None = None,
    *,
    spool: Path | None = None,
    lease_seconds: float = 60.0,
) -> Status:
    """What an operator must know; ``spool``: the configured spool directory, whose
    ``.claimed`` files (taken, not yet stored) are counted; ``lease_seconds``: the configured
    lease, after which a running daemon takes a dead one's work over."""
    facts = store.status_facts(now, now - RECEIPT_DEADLINE)
    problems = crl_warnings(crl_dir, now)
    for state in ("failed", "held"):
        if facts.counts.get(state):
            problems.append(
                f"{facts.counts[state]} message(s) {state}: `pfhjem-msg messages list --state {state}`"
            )
    if facts.oldest_unfinished and now - facts.oldest_unfinished[1] > HOUR:
        mid, at = facts.oldest_unfinished
        problems.append(f"message {mid} unfinished for {age(now - at)}: `pfhjem-msg messages show {mid}`")
    if facts.oldest_waiting_since and now - facts.oldest_waiting_since > HOUR:
        problems.append(
            f"a delivery has waited {age(now - facts.oldest_waiting_since)}: is a destination down?"
        )
    if facts.receipts_overdue:
        problems.append(f"{facts.receipts_overdue} GP copy(ies) without an AppRec after 96 hours")
    stale = stale_claims(facts, now, lease_seconds)
    if stale:
        oldest = min(c.oldest_expired for c in stale if c.oldest_expired)
        problems.append(
            f"{sum(c.expired for c in stale)} message(s) or deliveries claimed by "
            f"{', '.join(c.daemon for c in stale)} wait on a lease expired {age(now - oldest)} ago "
            f"(over 2 × lease_seconds = {2 * lease_seconds:g} s): that daemon died and no other daemon "
            "runs on this store to take its work over; start one (`pfhjem-msg run`)"
        )
    refused = store.refused_files(limit=1000)
    if refused:
        where = f" (moved to {spool / '.refused'})" if spool else ""
        problems.append(
            f"{len(refused)} spool file(s) refused{where}: look at them, then `pfhjem-msg status --ack-refused`"
        )
    claimed = claimed_waiting(spool) if spool else None
    if (
        claimed
        and claimed.oldest is not None
        and now.timestamp() - claimed.oldest > CLAIMED_STUCK.total_seconds()
    ):
        waited = age(timedelta(seconds=now.timestamp() - claimed.oldest))
        problems.append(
            f"{claimed.count} spool file(s) in .claimed not stored for {waited}: the store cannot take them "
            "(disk full?); the daemon stores them once it can"
        )
    edi2 = store.edi2_facts()
    if edi2 is not None and edi2.failing_since is not None:
        what = "HelseID or the message service refuses our credentials" if edi2.auth_failing else "it fails"
        problems.append(
            f"EDI 2.0 intake failing since {edi2.failing_since.isoformat(timespec='seconds')} ({what}; "
            f"{edi2.failures} failed round(s)): see the daemon's log (edi2.round_failed)"
        )
    if edi2 is not None and edi2.held:
        problems.append(
            f"{edi2.held} EDI 2.0 message(s) held: the service refused our AppRec or read mark; "
            "`pfhjem-msg messages list --state held`"
        )
    return Status(facts, now, problems, store.followup_counts(local_date(now)), refused, claimed, edi2)


def stale_claims(facts: StatusFacts, now: datetime, lease_seconds: float) -> list[ClaimHolder]:
    """The daemons holding work whose lease expired over twice the lease ago: a running daemon
    would have taken it over by then, so none runs."""
    limit = now - timedelta(seconds=2 * lease_seconds)
    return [c for c in facts.claims if c.oldest_expired is not None and c.oldest_expired < limit]


def acknowledge_refused(store: OperatorStore, now: datetime) -> int:
    """An operator has seen the refused files: ``status`` stops asking (audited)."""
    return store.acknowledge_refused(operator(), now)


def age(delta: timedelta) -> str:
    """«3 d 4 h», «2 h 5 min», «7 min»."""
    seconds = int(delta.total_seconds())
    if seconds >= 86400:
        return f"{seconds // 86400} d {seconds % 86400 // 3600} h"
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min"
