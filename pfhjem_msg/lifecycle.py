"""The life of a stored message, written down once: its states and which of them allow what.

A second store backend must not restate these rules in its own SQL, so every backend, the
operator's verbs, the pipeline and the metrics ask this module. It is pure: no store, no
clock, no I/O, so each rule is tested on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal, get_args

from pfhjem_msg.errors import OperatorRefused

State = Literal[
    "received", "parsed", "classified", "routed", "delivered",
    "done", "rejected", "duplicate", "held", "failed", "discarded",
]  # fmt: skip
ALL_STATES: tuple[State, ...] = get_args(State)
"""Every state, in the order a message normally passes through them (listings, metrics)."""

DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled"]

PROCESSING: frozenset[str] = frozenset({"received", "parsed", "classified"})
"""Not decided yet: the pipeline may still draft the message's outcome."""
UNFINISHED: frozenset[str] = PROCESSING | {"routed", "delivered"}
"""Still with the daemon; ``held`` waits for a person and is counted on its own."""
WAITING: frozenset[str] = frozenset({"held"})
"""Waiting for a person: not final, but the daemon will not move it."""
TERMINAL: frozenset[str] = frozenset({"done", "rejected", "duplicate", "failed", "discarded"})
"""Nothing more happens to the message unless an operator replays it."""
OUTCOMES: frozenset[str] = frozenset({"done", "rejected", "duplicate", "held", "failed"})
"""Where one processing round may leave a message (a final state, or held)."""
PRUNABLE: frozenset[str] = frozenset({"done", "rejected", "duplicate", "discarded"})
"""Final states whose originals retention may delete; ``failed`` waits for an operator."""

HOLDABLE: frozenset[str] = UNFINISHED
"""An operator may hold only a message still being processed."""
RELEASABLE: frozenset[str] = WAITING
DISCARDABLE: frozenset[str] = UNFINISHED | {"held", "failed", "rejected"}
"""A finished message (done, duplicate, discarded) has nothing left to discard."""
REPLAYABLE: frozenset[str] = frozenset({"failed", "rejected", "held", "discarded"})
FORCED_REPLAY: frozenset[str] = frozenset({"done", "duplicate"})
"""Replayable only when the operator says they mean it (it was handled once already)."""


# -- transitions -------------------------------------------------------------------------------

Actor = Literal["daemon", "operator"]

TRANSITIONS: dict[tuple[Actor, str], frozenset[str]] = {
    ("daemon", "received"): frozenset({"parsed", "classified", "routed", "done", "rejected", "duplicate",
                                       "held", "failed"}),
    ("daemon", "parsed"): frozenset({"classified", "routed", "done", "rejected", "duplicate", "held", "failed"}),
    ("daemon", "classified"): frozenset({"routed", "done", "rejected", "duplicate", "held", "failed"}),
    ("daemon", "routed"): frozenset({"delivered", "done", "failed", "held"}),
    ("daemon", "delivered"): frozenset({"done", "rejected", "held"}),
    ("daemon", "done"): frozenset({"held", "failed"}),
    ("daemon", "held"): frozenset({"failed"}),
    ("operator", "held"): UNFINISHED | {"discarded", "received"},
    ("operator", "failed"): frozenset({"routed", "received", "discarded"}),
    ("operator", "rejected"): frozenset({"received", "discarded"}),
    ("operator", "discarded"): frozenset({"received"}),
    **{("operator", s): frozenset({"held", "discarded"}) for s in UNFINISHED},
}  # fmt: skip
"""Who may move a message from which state to which. ``done`` and ``duplicate`` have no way
out for an operator: replaying them makes a new message (``replay_as_new``), the old one stays
as it was. The daemon moves a ``done`` message on when a GP's receipt asks for a person
(``held``) or a reminder sent later for it fails for good (``failed``); a delivery that fails
for good fails a ``held`` message too, so an operator sees it among the failed."""


class IllegalTransition(OperatorRefused):
    """A move the lifecycle does not allow; refused before anything is written."""


def check_transition(actor: Actor, message_id: int, current: str, target: str) -> None:
    """Refuse a move the table does not list, naming the message, both states and the way out."""
    allowed = TRANSITIONS.get((actor, current), frozenset())
    if target not in allowed:
        ways = ", ".join(sorted(allowed)) or "none (replay it as a new message, or leave it)"
        raise IllegalTransition(
            f"message {message_id} cannot go from {current} to {target} ({actor}); from {current} it may go to: {ways}"
        )


def illegal_daemon_move(current: str, targets: Sequence[str]) -> tuple[str, str] | None:
    """The first of the daemon's consecutive moves from ``current`` through ``targets`` that the
    table does not allow, as (from, to); None when every one is allowed. The store asks this
    before it writes a daemon's change, so a drafting bug cannot leave a message in a state its
    history does not explain."""
    state = current
    for target in targets:
        if target not in TRANSITIONS.get(("daemon", state), frozenset()):
            return state, target
        state = target
    return None


@dataclass(frozen=True)
class OperatorMove:
    """The row changes one operator transition makes; the store executes exactly these."""

    target: str
    held_from: str | None
    """Stored so a release puts the message back where it was held."""
    again: bool
    """The message has been through the pipeline before: it may owe no AppRec."""
    due_now: bool
    """Back in the processing states: the daemon should take it at once."""
    retry_failed: bool
    cancel_pending: bool


def operator_move(message_id: int, current: str, held_from: str | None, to_state: str | None, *,
                  redraft: bool = False, retry_failed: bool = False, cancel_pending: bool = False,
                  remember_held_from: bool = False) -> OperatorMove:  # fmt: skip
    """``to_state`` None is a release: back to the state it was held in, or from the start when
    the daemon (not an operator) held it and nobody knows how far it had got."""
    target = to_state or held_from or "received"
    check_transition("operator", message_id, current, target)
    again = redraft or (to_state is None and held_from is None)
    return OperatorMove(target, current if remember_held_from else None, again, target in PROCESSING,
                        retry_failed, cancel_pending)  # fmt: skip


# -- replay ------------------------------------------------------------------------------------

ReplayMode = Literal["deliveries", "from_start", "new_message"]


def replay_mode(message_id: int, state: str, *, pruned: bool, has_failed_deliveries: bool,
                from_start: bool, force_duplicate: bool) -> ReplayMode:  # fmt: skip
    """How a replay re-queues a message, or why it may not: a failed message with failed
    deliveries only retries those; a handled one (done, duplicate) is replayed as a new message
    so its history stays, and only when the operator says so; the rest start over."""
    if pruned:
        raise OperatorRefused(
            f"message {message_id}'s original was deleted by retention: it cannot be replayed"
        )
    if state in UNFINISHED:
        raise OperatorRefused(
            f"message {message_id} is still being processed ({state}); wait, or hold it first"
        )
    if state in FORCED_REPLAY and not force_duplicate:
        raise OperatorRefused(
            f"message {message_id} is {state}: a replay would deliver it a second time; "
            "add --force-duplicate if that is what you want (no second AppRec is sent)"
        )
    if state in FORCED_REPLAY:
        return "new_message"
    if state not in REPLAYABLE:
        raise OperatorRefused(f"message {message_id} is {state}: it cannot be replayed")
    if state == "failed" and has_failed_deliveries and not from_start:
        return "deliveries"
    return "from_start"


# -- deliveries --------------------------------------------------------------------------------

DeliveryKind = Literal["apprec", "case_unit", "default", "gp_copy", "reminder"]
"""What a delivery is: our AppRec, the message to the case unit or the default destination,
the copy to the patient's GP, or a follow-up reminder (with its follow-up id and phase)."""
DELIVERY_KINDS: tuple[DeliveryKind, ...] = get_args(DeliveryKind)

DestinationTransport = Literal["hub", "dir", "smtp", "edi2"]
"""How a configured destination is reached."""
Transport = Literal[DestinationTransport, "edi2_apprec"]
"""How a delivery goes: a destination's transport, or ``edi2_apprec``: our AppRec for a message
that came over EDI 2.0, which the EDI 2.0 intake posts for its service message
(``POST /Messages/{id}/apprec/{herId}``) and ``deliver_due`` never sends."""
TRANSPORTS: tuple[Transport, ...] = get_args(Transport)
POSTED_BY_INTAKE: frozenset[str] = frozenset({"edi2_apprec"})
"""Transports whose deliveries the EDI 2.0 intake performs, not ``deliver_due``."""


def describe_destination(transport: str, target: str | None) -> str:
    """The destination as operators read it (``messages show``, log lines): ``dir:/path``,
    ``smtp:address``, or the transport alone. For display only: nothing parses it."""
    if transport == "edi2_apprec":
        return "edi2 (AppRec to its service message)"
    return f"{transport}:{target}" if target else transport


# -- sending -----------------------------------------------------------------------------------

NOT_SENDING: frozenset[str] = frozenset({"discarded", "held"})
"""States whose pending deliveries wait; a held message still sends what it owes anyway:"""
SENT_WHILE_HELD: frozenset[DeliveryKind] = frozenset({"apprec", "reminder"})
"""The hub is answered (and reminders go out) even when a person must look at the message."""


def may_send(state: str, kind: str) -> bool:
    """Whether a due delivery of a message in ``state`` goes out now."""
    if state not in NOT_SENDING:
        return True
    return state in WAITING and kind in SENT_WHILE_HELD


def may_send_sql(state: str, kind: str) -> str:
    """``may_send`` as an SQL condition on the columns named ``state`` and ``kind``, written from
    the same sets, so a store's query can filter before its LIMIT and never disagree."""

    def quoted(values: frozenset[str]) -> str:
        return ",".join(f"'{v}'" for v in sorted(values))

    return (
        f"({state} NOT IN ({quoted(NOT_SENDING)}) OR ({state} IN ({quoted(WAITING)}) "
        f"AND {kind} IN ({quoted(frozenset(SENT_WHILE_HELD))})))"
    )


# -- retention ---------------------------------------------------------------------------------


def may_prune(state: str, updated_at: datetime, before: datetime, *, needed_by_open_followup: bool) -> bool:
    """Retention deletes an original only when nothing can still need it: a final state an
    operator need not look at, untouched since ``before``, and no open follow-up on it."""
    return state in PRUNABLE and updated_at < before and not needed_by_open_followup


# -- follow-up episodes ------------------------------------------------------------------------


def same_episode_range(anchor: date, days: int) -> tuple[date, date]:
    """Anchors this close belong to one episode: a second plan for them would be a duplicate."""
    return anchor - timedelta(days=days), anchor + timedelta(days=days)


def nearest_followup(candidates: Sequence[tuple[int, date]], today: date) -> int | None:
    """The open follow-up a marked message closes: the one whose window starts nearest today
    (the earlier-made one on a tie)."""
    if not candidates:
        return None
    return min(candidates, key=lambda c: (abs((c[1] - today).days), c[0]))[0]


def closing_status(death: bool, point: int, contact_point: int | None) -> Literal["done", "cancelled"]:
    """When the pathway ends, the follow-up at the point that ended it is done; the others are
    cancelled, and all are cancelled when the patient has died."""
    return "done" if not death and point == contact_point else "cancelled"
