"""The message store: the one record of every message, its state, its deliveries and its
history. Everything the daemon does is derived from the raw bytes stored here first.

Backends implement ``Store``; ``tests/test_store_contract.py`` is the contract each must pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

State = Literal[
    "received", "parsed", "classified", "routed", "delivered",
    "done", "rejected", "duplicate", "held", "failed", "discarded",
]  # fmt: skip
FINAL_STATES: frozenset[str] = frozenset({"done", "rejected", "duplicate", "failed", "discarded"})
WAITING_STATES: frozenset[str] = frozenset({"held"})
DeliveryKind = Literal["apprec", "case_unit", "default", "gp_copy"]
DeliveryStatus = Literal["pending", "delivered", "failed"]


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


@dataclass(frozen=True)
class DeliverySpec:
    """A side effect a routing decision asks for, with everything needed to perform it again
    identically: the bytes are built once, so a retry never sends something different."""

    kind: DeliveryKind
    destination: str
    """Transport and target, e.g. ``dir:/var/lib/pfhjem-msg/outbox`` or ``smtp:x@y``."""
    filename: str
    payload: bytes
    her_id: str | None = None
    out_msg_id: str | None = None
    """The MsgId of what we send (AppRec Id or GP copy MsgId), for matching receipts."""


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    message_id: int
    kind: str
    destination: str
    filename: str
    payload: bytes
    her_id: str | None
    out_msg_id: str | None
    status: str
    attempts: int
    last_error: str | None


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
    each), deliveries to add (once per kind), facts read, a receipt to record."""

    message_id: int
    steps: Sequence[Transition]
    deliveries: Sequence[DeliverySpec] = ()
    on_delivered: State = "done"
    """The final state once every delivery is done (``rejected`` after a negative AppRec)."""
    facts: Facts | None = None
    receipt: Receipt | None = None


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

    def apply(self, changes: Sequence[Change], now: datetime) -> None:
        """Commit the changes of several messages in one transaction: for each, append an
        event per step, add its deliveries (once per kind), record facts and receipt, reset
        the attempt count; a message whose deliveries are all done finishes at once."""

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

    def delivered(self, delivery_ids: Sequence[int], now: datetime) -> list[tuple[int, str]]:
        """Mark deliveries done; a message whose deliveries are all done reaches its final
        state (``done``, or ``rejected`` after a negative AppRec) in the same transaction.
        Returns (message id, final state) of the messages that finished."""

    def delivery_failed(self, delivery_id: int, error: str, now: datetime, retry_at: datetime | None) -> None:
        """Record a failed attempt; ``retry_at`` None means no more tries (permanent)."""

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

    def counts(self) -> dict[str, int]: ...

    def close(self) -> None: ...
