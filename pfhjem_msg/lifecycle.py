"""The life of a stored message, written down once: its states and which of them allow what.

A second store backend must not restate these rules in its own SQL, so every backend, the
operator's verbs, the pipeline and the metrics ask this module. It is pure: no store, no
clock, no I/O, so each rule is tested on its own.
"""

from __future__ import annotations

from typing import Literal, get_args

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
