"""The message store: the one record of every message, its state, its deliveries and its
history. Everything the daemon does is derived from the raw bytes stored here first.

Backends implement ``Store``; ``tests/store/`` is the contract each must pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, Protocol

from pfhjem_msg.followups import Followup, FollowupFacts, FollowupFilter, Phase
from pfhjem_msg.lifecycle import (
    DELIVERY_KINDS,
    TRANSPORTS,
    DeliveryKind,
    State,
    Transport,
    describe_destination,
)

__all__ = ["DeliveryKind", "Transport"]  # listed once, in ``lifecycle``; here for the store's users


@dataclass(frozen=True)
class Accepted:
    message_id: int
    new: bool
    """False when the same bytes were accepted before (a resend, or a spool file recovered
    after a crash): nothing new was stored."""


@dataclass(frozen=True)
class Due:
    message_id: int
    attempts: int
    """Processing attempts begun and not finished: above 0, an earlier try crashed."""
    again: bool = False
    """Replayed by an operator (in place, or as a new message): it may owe no AppRec."""


@dataclass(frozen=True)
class Facts:
    """What reading a message told us, kept on its row for listing and matching."""

    msg_id: str | None
    msg_type: str | None
    sender_her: str | None
    receiver_her: str | None
    marked: bool | None


@dataclass(frozen=True)
class MessageRow:
    id: int
    state: str
    state_reason: str | None
    received_at: datetime
    source: str
    msg_id: str | None
    msg_type: str | None
    sender_her: str | None
    receiver_her: str | None
    marked: bool | None
    attempts: int
    replay_of: int | None = None
    """Set on a forced replay of a finished message: the message it replays."""
    pruned: bool = False
    """The original bytes and payloads were deleted by retention."""


class Addressed:
    """Where a delivery goes, in typed columns; ``destination`` only shows it to a person."""

    transport: Transport
    target: str | None
    kind: DeliveryKind
    followup_id: int | None
    phase: Phase | None

    @property
    def destination(self) -> str:
        """``dir:/path``, ``smtp:address``, ``hub``, … for ``messages show`` and log lines."""
        return describe_destination(self.transport, self.target)

    @property
    def slot(self) -> tuple[DeliveryKind, int | None, Phase | None]:
        """What a message has at most one delivery of: its kind, and for a reminder its
        follow-up and phase."""
        return self.kind, self.followup_id, self.phase


def check_slot(kind: DeliveryKind, followup_id: int | None, phase: Phase | None) -> None:
    """A reminder names its follow-up and phase; nothing else does; every kind is one of the list."""
    if kind not in DELIVERY_KINDS:
        raise ValueError(f"{kind!r} is not a delivery kind; the kinds are {', '.join(DELIVERY_KINDS)}")
    if (kind == "reminder") != (followup_id is not None and phase is not None) or (
        kind != "reminder" and (followup_id is not None or phase is not None)
    ):
        raise ValueError(f"a {kind} delivery has follow-up {followup_id} and phase {phase}: "
                         "a reminder needs both, any other kind neither")  # fmt: skip


@dataclass(frozen=True)
class DeliverySpec(Addressed):
    """A side effect a routing decision asks for, with everything needed to perform it again
    identically: the bytes are built once, so a retry never sends something different."""

    kind: DeliveryKind
    transport: Transport
    filename: str
    payload: bytes
    her_id: str | None = None
    out_msg_id: str | None = None
    """The MsgId of what we send (AppRec Id or GP copy MsgId), for matching receipts."""
    original: bool = False
    """The payload is the message's stored original (a case-unit copy): stored once, not twice."""
    target: str | None = None
    """The directory (``dir``) or e-mail address (``smtp``); None for the other transports."""
    followup_id: int | None = None
    phase: Phase | None = None
    """A reminder's follow-up and phase (kind ``reminder``); None for every other kind."""

    def __post_init__(self) -> None:
        check_slot(self.kind, self.followup_id, self.phase)
        if self.transport not in TRANSPORTS:
            raise ValueError(
                f"{self.transport!r} is not a transport; the transports are {', '.join(TRANSPORTS)}"
            )


@dataclass(frozen=True)
class DeliveryRow(Addressed):
    id: int
    message_id: int
    kind: DeliveryKind
    transport: Transport
    target: str | None
    filename: str
    payload: bytes
    her_id: str | None
    out_msg_id: str | None
    status: str
    attempts: int
    last_error: str | None
    followup_id: int | None = None
    phase: Phase | None = None


@dataclass(frozen=True)
class Event:
    at: datetime
    actor: str
    from_state: str | None
    to_state: str | None
    reason: str


@dataclass(frozen=True)
class Transition:
    """One state change with the facts learnt at that step."""

    to_state: State
    reason: str
    actor: str = "daemon"


@dataclass(frozen=True)
class Receipt:
    """An AppRec received for something we sent."""

    delivery_id: int
    status: str
    errors: str
    hold_reason: str | None = None
    """Set when the receipt puts the original message on hold (a rejected GP copy)."""


@dataclass(frozen=True)
class Change:
    """Everything processing one message decided, committed together: steps (an event
    each), deliveries to add (once per ``slot``), facts read, a receipt to record."""

    message_id: int
    steps: Sequence[Transition]
    deliveries: Sequence[DeliverySpec] = ()
    on_delivered: State = "done"
    """The final state once every delivery is done (``rejected`` after a negative AppRec)."""
    facts: Facts | None = None
    receipt: Receipt | None = None
    followup: FollowupFacts | None = None
    """For a routed, marked message that names a patient: plan an episode (SP1), close a follow-up
    (SP2/SP3), or close the patient's open follow-ups (the pathway ends, the patient has died)."""


@dataclass(frozen=True)
class MessageFilter:
    """What ``messages list`` and bulk replays select; every given condition must hold."""

    states: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    sender: str | None = None
    receiver: str | None = None
    msg_type: str | None = None
    marked: bool | None = None
    limit: int | None = 100


@dataclass(frozen=True)
class DeliveryInfo(Addressed):
    """A delivery with everything an operator may ask about it (no payload)."""

    id: int
    kind: DeliveryKind
    transport: Transport
    target: str | None
    filename: str
    her_id: str | None
    out_msg_id: str | None
    status: str
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    receipt_status: str | None
    receipt_errors: str | None
    receipt_at: datetime | None
    receipt_overdue_at: datetime | None
    service_id: str | None = None
    """The message service's id for it, when it went through EDI 2.0."""
    followup_id: int | None = None
    phase: Phase | None = None


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    message_id: int | None
    detail: str


@dataclass(frozen=True)
class StatusFacts:
    counts: dict[str, int]
    oldest_unfinished: tuple[int, datetime] | None
    last_intake: datetime | None
    deliveries_waiting: int
    oldest_waiting_since: datetime | None
    receipts_overdue: int
    claims: tuple[ClaimHolder, ...] = ()
    """Per daemon, the unfinished work it holds (by daemon id)."""

    @property
    def claims_expired(self) -> int:
        """Rows still claimed whose lease has run out: work waiting for another daemon."""
        return sum(c.expired for c in self.claims)


@dataclass(frozen=True)
class ClaimHolder:
    """What one daemon holds of the unfinished work: due messages and pending deliveries.
    Finished rows keep their last claimer's id and are not counted."""

    daemon: str
    messages: int
    deliveries: int
    latest_until: datetime | None
    """The latest lease expiry among its rows."""
    expired: int
    """Its rows whose lease has expired (``claimed_until`` at or before now)."""
    oldest_expired: datetime | None
    """The earliest expiry among those: how long the work has waited for a takeover."""


@dataclass(frozen=True)
class Edi2Link:
    """A message service message that brought one of ours (``messages show``)."""

    service_id: str
    receiver_her: int
    is_apprec: bool
    apprec: str
    """``none``, ``intent`` (being posted) or ``posted``."""
    apprec_service_id: str | None
    read_at: datetime | None
    held: str | None


@dataclass(frozen=True)
class Edi2IntakeFacts:
    """Whether intake from the message service works, as the daemon last recorded it (``status``)."""

    last_success: datetime | None
    failing_since: datetime | None
    last_error: str | None
    auth_failing: bool
    failures: int
    held: int
    """Service messages held for an operator (the service refused the AppRec or the read mark)."""
    unsettled: int
    """Service messages stored and not yet answered and marked read."""


RefusedReason = Literal["symlink", "not_regular", "too_large", "unreadable"]
REFUSED_REASONS: tuple[RefusedReason, ...] = ("symlink", "not_regular", "too_large", "unreadable")


@dataclass(frozen=True)
class RefusedFile:
    """A spool file that was not taken: its name, why and how large; never its content."""

    id: int
    at: datetime
    source: str
    name: str
    reason: str
    size: int | None
    acknowledged_at: datetime | None


@dataclass(frozen=True)
class PruneResult:
    payloads: int
    """Messages whose original and payloads were (or would be) deleted."""
    messages: int
    """Messages deleted with their events and deliveries (past the metadata horizon)."""
    bytes_before: int
    bytes_after: int


class Store(Protocol):
    def accept(self, raw: bytes, source: str, now: datetime) -> Accepted:
        """Store the bytes and a new message in ``received``, durably, before returning."""

    def accept_many(self, items: Sequence[tuple[bytes, str]], now: datetime) -> list[Accepted]:
        """``accept`` for several (bytes, source) at once, in one durable transaction: the
        spool's way of paying for one disk flush per batch instead of one per file."""

    def raw(self, message_id: int) -> bytes: ...

    def message(self, message_id: int) -> MessageRow | None: ...

    def due_messages(self, now: datetime, limit: int) -> list[Due]:
        """Messages not in a final or waiting state whose next attempt is due, oldest first."""

    def begin_attempts(self, message_ids: Sequence[int], now: datetime) -> dict[int, int]:
        """Count one processing attempt for each (committed before the work), return the
        counts; a message that keeps crashing the pipeline is thereby noticed after a restart."""

    def find_duplicate(self, message_id: int, msg_id: str, sender_her: str | None) -> int | None:
        """An earlier message (not this one) with the same MsgId from the same sender."""

    def apply(self, changes: Sequence[Change], now: datetime, owner: str | None = None) -> None:
        """Commit the changes of several messages in one transaction: for each, append an
        event per step, add its deliveries (once per ``slot``), record facts and receipt, reset
        the attempt count; a message whose deliveries are all done finishes at once.
        ``owner``: only for the messages it still holds (``claim_messages``)."""

    def transition(
        self,
        message_id: int,
        steps: Sequence[Transition],
        now: datetime,
        deliveries: Sequence[DeliverySpec] = (),
        on_delivered: State = "done",
    ) -> None:
        """``apply`` for one message."""  # fmt: skip

    def postpone(self, message_id: int, retry_at: datetime, error: str, now: datetime) -> None: ...

    def due_deliveries(self, now: datetime, limit: int) -> list[DeliveryRow]: ...

    def deliveries(self, message_id: int) -> list[DeliveryRow]: ...

    def delivered(self, delivery_ids: Sequence[int], now: datetime,
                  owner: str | None = None) -> list[tuple[int, str]]:  # fmt: skip
        """Mark deliveries done; a message whose deliveries are all done reaches its final
        state (``done``, or ``rejected`` after a negative AppRec) in the same transaction.
        Returns (message id, final state) of the messages that finished. ``owner``: only the
        deliveries it still holds (``claim_deliveries``)."""

    def delivery_failed(self, delivery_id: int, error: str, now: datetime, retry_at: datetime | None,
                        owner: str | None = None) -> None:  # fmt: skip
        """Record a failed attempt; ``retry_at`` None means no more tries (permanent).
        ``owner``: only if it still holds the delivery."""

    def events(self, message_id: int) -> list[Event]: ...

    def outgoing(self, out_msg_id: str) -> DeliveryRow | None: ...

    def record_receipt(
        self, delivery_id: int, status: str, errors: str, now: datetime, hold_reason: str | None
    ) -> None:
        """An AppRec received for something we sent; ``hold_reason`` puts its message on hold."""

    def overdue_receipts(self, before: datetime) -> list[DeliveryRow]:
        """GP copies delivered before ``before`` that have had no AppRec back."""

    def flag_overdue_receipts(self, before: datetime, now: datetime) -> list[DeliveryRow]:
        """Those of ``overdue_receipts`` not flagged yet: flag each and add an event to its
        message, once, so an operator sees it in the message's history."""

    def apprec_sent(self, message_id: int) -> DeliveryRow | None:
        """The AppRec already delivered for this received message: for itself, for the
        message it replays, or for an earlier copy with the same MsgId from the same sender."""

    def record_refused(self, source: str, name: str, reason: RefusedReason, size: int | None,
                       now: datetime) -> int:  # fmt: skip
        """Note, durably, a file that was refused, for ``status`` until an operator has seen
        it; the same file refused again (not yet acknowledged) is not noted twice."""

    def counts(self) -> dict[str, int]: ...

    def close(self) -> None: ...


class ClaimStore(Protocol):
    """Several daemons on one store (``pfhjem_msg.lease``, ``store.claims``)."""

    def claim_messages(self, owner: str, now: datetime, until: datetime, limit: int) -> list[Due]:
        """The due messages (as ``due_messages``) that nobody else holds, now held by ``owner``
        until ``until``; up to ``limit``, oldest first."""

    def claim_deliveries(self, owner: str, now: datetime, until: datetime, limit: int) -> list[DeliveryRow]:
        """The due deliveries (as ``due_deliveries``) that nobody else holds, now held by
        ``owner`` until ``until``."""

    def renew_claims(self, owner: str, until: datetime) -> int:
        """Extend what ``owner`` holds to ``until``; how many rows."""

    def held_deliveries(self, owner: str, delivery_ids: Sequence[int]) -> list[int]:
        """Those of the deliveries ``owner`` still holds: asked just before sending them."""

    def release_claims(self, owner: str | None) -> int:
        """Free what ``owner`` holds, or (None) every claim."""

    def exclusive(self, name: str) -> AbstractContextManager[bool]:
        """True while no other daemon does the job ``name``."""


class FollowupStore(Protocol):
    """The follow-up plan in the store."""

    def followups(self, f: FollowupFilter, today: date) -> list[Followup]: ...

    def followup(self, followup_id: int) -> Followup | None: ...

    def followups_for_message(self, message_id: int) -> list[Followup]: ...

    def open_followups(self, until: date) -> list[Followup]:
        """Open follow-ups whose window starts on or before ``until`` (candidates for a reminder)."""

    def add_reminder(self, followup_id: int, phase: Phase, spec: DeliverySpec, now: datetime) -> bool:
        """Queue the reminder as a delivery of the source message and note it on the
        follow-up, once: False if that reminder (or a later one) was queued before."""

    def close_followup(
        self, followup_id: int, status: str, actor: str, note: str, now: datetime, whole_episode: bool = False
    ) -> list[int]:
        """``done`` or ``cancelled`` by an operator, with an event on the source message and an
        audit entry; ``whole_episode``: every open follow-up of its episode. Returns the ids."""  # fmt: skip

    def followup_counts(self, today: date) -> dict[str, dict[str, int]]:
        """Per municipality: open, due and overdue follow-ups."""


class OperatorStore(Store, FollowupStore, Protocol):
    """What the operator commands need beyond the daemon's own use of the store."""

    def list_messages(self, f: MessageFilter) -> list[MessageRow]: ...

    def resolve(self, ident: str) -> list[int]:
        """Our message id, or every message with that MsgId."""

    def delivery_info(self, message_id: int) -> list[DeliveryInfo]: ...

    def lineage(self, message_id: int) -> tuple[int | None, list[int]]:
        """(the message this one replays, the messages that replay this one)."""

    def operator_transition(
        self,
        message_id: int,
        *,
        allowed: frozenset[str],
        to_state: str | None,
        actor: str,
        reason: str,
        now: datetime,
        redraft: bool = False,
        retry_failed: bool = False,
        cancel_pending: bool = False,
        remember_held_from: bool = False,
    ) -> str:
        """Move the message (if its state is still one of ``allowed``) and append the event
        and the audit entry, in one transaction; return the state it left. ``to_state`` None
        returns an operator-held message to the state it was held from. ``redraft``: the next
        processing replaces what was not delivered; ``retry_failed``: failed deliveries are
        due again; ``cancel_pending``: what was not delivered is cancelled."""

    def replay_as_new(self, message_id: int, actor: str, reason: str, now: datetime) -> int:
        """A new message with the same original, linked to this one, to be processed afresh."""

    def audit(self, actor: str, action: str, message_id: int | None, detail: str, now: datetime) -> None: ...

    def audit_entries(self, since: datetime | None, limit: int | None = None) -> list[AuditEntry]: ...

    def status_facts(self, now: datetime, receipt_deadline: datetime) -> StatusFacts: ...

    def refused_files(self, acknowledged: bool = False, limit: int = 100) -> list[RefusedFile]:
        """Refused files, newest first: those not yet acknowledged (or, with
        ``acknowledged``, all of them)."""

    def acknowledge_refused(self, actor: str, now: datetime) -> int:
        """Mark every refused file seen by an operator (with an audit entry); the count."""

    def prune(self, payload_before: datetime, metadata_before: datetime | None, now: datetime,
              dry_run: bool = False) -> PruneResult: ...  # fmt: skip

    def edi2_links(self, message_id: int) -> list[Edi2Link]:
        """The message service messages that brought this message (none: it came another way)."""

    def edi2_facts(self) -> Edi2IntakeFacts | None:
        """None when intake from the message service has never run on this store."""
