"""The stored forms of times and the rows the queries return, the same on both backends.

Times are stored as ISO-8601 text in UTC (microseconds): it sorts and compares as text in
SQLite and PostgreSQL alike, so every query is written once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache

from pfhjem_msg.store.base import DeliveryRow, MessageRow
from pfhjem_msg.store.sql import Row


@lru_cache(maxsize=64)
def ts(moment: datetime) -> str:
    """The stored form of a time. Cached: one batch writes the same moment many times."""
    return moment.isoformat(timespec="microseconds")


def parse_ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def message_row(r: Row) -> MessageRow:
    return MessageRow(
        r["id"], r["state"], r["state_reason"], datetime.fromisoformat(r["received_at"]), r["source"],
        r["msg_id"], r["msg_type"], r["sender_her"], r["receiver_her"],
        None if r["marked"] is None else bool(r["marked"]), r["attempts"], r["replay_of"],
        r["pruned_at"] is not None,
    )  # fmt: skip


DELIVERY_SELECT = (
    "SELECT d.id, d.message_id, d.kind, d.followup_id, d.phase, d.transport, d.target, d.filename, d.her_id, "
    "d.out_msg_id, d.status, "
    "d.attempts, d.last_error, CASE WHEN d.original = 1 THEN r.bytes ELSE d.payload END AS payload "
    "FROM deliveries d JOIN messages m ON m.id = d.message_id JOIN raw r ON r.id = m.raw_id"
)
"""Deliveries with their payload: the stored original for a case-unit copy (none once pruned)."""


def delivery_row(r: Row) -> DeliveryRow:
    return DeliveryRow(
        r["id"], r["message_id"], r["kind"], r["transport"], r["target"], r["filename"],
        bytes(r["payload"] or b""), r["her_id"], r["out_msg_id"], r["status"], r["attempts"], r["last_error"],
        r["followup_id"], r["phase"],
    )  # fmt: skip


def marks(values: Sequence[object]) -> str:
    """The ``?,?,?`` of an ``IN (...)`` for these values."""
    return ",".join("?" * len(values))


def chunks(ids: Sequence[int], size: int = 500) -> list[Sequence[int]]:
    """Ids in slices small enough for one statement's parameters: one statement per slice
    instead of one per row."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]
