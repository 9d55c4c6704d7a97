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


class Store(Protocol):
    def accept(self, raw: bytes, source: str, now: datetime) -> Accepted:
        """Store the bytes and a new message in ``received``, durably, before returning."""

    def raw(self, message_id: int) -> bytes: ...

    def message(self, message_id: int) -> MessageRow | None: ...

    def due_messages(self, now: datetime, limit: int) -> list[int]:
        """Messages not in a final or waiting state whose next attempt is due, oldest first."""

    def begin_attempt(self, message_id: int, now: datetime) -> int:
        """Count one processing attempt (committed before the work), return the count; a
        message that keeps crashing the pipeline is thereby noticed after a restart."""

    def record_facts(
        self,
        message_id: int,
        *,
        msg_id: str | None,
        msg_type: str | None,
        sender_her: str | None,
        receiver_her: str | None,
        marked: bool | None,
    ) -> None: ...

    def find_duplicate(self, message_id: int, msg_id: str, sender_her: str | None) -> int | None:
        """An earlier message (not this one) with the same MsgId from the same sender."""

    def transition(
        self,
        message_id: int,
        steps: Sequence[Transition],
        now: datetime,
        deliveries: Sequence[DeliverySpec] = (),
        retry_at: datetime | None = None,
        on_delivered: State = "done",
    ) -> None:
        """Apply steps in order, append an event for each, add deliveries (once per kind) and
        reset the attempt count, all in one transaction. ``on_delivered`` is the final state
        once every delivery is done (``rejected`` after a negative AppRec)."""

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

    def counts(self) -> dict[str, int]: ...

    def close(self) -> None: ...
