"""Claims: which daemon works on which rows (see ``pfhjem_msg.lease``), and the periodic jobs
only one daemon at a time may do.

A claim takes the due rows nobody holds (no claimer, or a lease that has expired) and those
this daemon holds already, and writes its id and the lease's expiry on them, in one
transaction. On PostgreSQL the rows are picked ``FOR UPDATE SKIP LOCKED``: two daemons
claiming at once take different rows instead of waiting for each other or taking the same
ones; the SQLite file has one writer at a time, so a plain ``SELECT`` is the same. Committing
work for claimed rows is refused, row by row, where the claim is no longer this daemon's
(``_held_messages``, ``_held_deliveries``, read ``FOR UPDATE`` so a claim cannot slip in
between the check and the commit). Deliveries are claimed beside ``due_deliveries`` in
``messages``, with the same filter.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Literal

from pfhjem_msg.lifecycle import PROCESSING
from pfhjem_msg.logs import get_logger
from pfhjem_msg.store.base import Change, Due
from pfhjem_msg.store.core import StoreCore
from pfhjem_msg.store.rows import chunks, marks, ts
from pfhjem_msg.store.sql import Db, Row

log = get_logger("pfhjem_msg.store")

ADVISORY_CLASS = 0x70666A6D
"""The first key of our advisory locks ("pfjm"), so they cannot collide with another program's
on the same database."""


DUE_STATES = "({})".format(",".join(f"'{v}'" for v in sorted(PROCESSING)))
"""The states a message is processed from."""


def advisory_key(name: str) -> int:
    """A job's lock key: stable across daemons and versions (not Python's salted ``hash``)."""
    return zlib.crc32(name.encode()) - (1 << 31)


def take(db: Db, table: str, event: str, owner: str, until: datetime, rows: Sequence[Row]) -> list[int]:
    """Write the claim on the rows picked (id first, the former claimer last); log those taken
    over from another daemon, whose lease had expired. The ids, in the order picked."""
    ids = [int(r[0]) for r in rows]
    for part in chunks(ids):
        db.execute(f"UPDATE {table} SET claimed_by = ?, claimed_until = ? WHERE id IN ({marks(part)})",
                   (owner, ts(until), *part))  # fmt: skip
    taken = [(int(r[0]), r[-1]) for r in rows if r[-1] is not None and r[-1] != owner]
    if taken:
        log.warning(event, ids=[i for i, _ in taken][:50], count=len(taken),
                    from_daemons=sorted({d for _, d in taken}),
                    note="claimed by a daemon whose lease expired (it died, or stalled): done here")  # fmt: skip
    return ids


class ClaimQueries(StoreCore):
    def claim_messages(self, owner: str, now: datetime, until: datetime, limit: int) -> list[Due]:
        """Claim up to ``limit`` due messages, oldest first: not in a final or waiting state,
        next attempt due, and free or already ours."""

        def work(db: Db) -> list[Due]:
            rows = db.execute(
                "SELECT id, attempts, redraft, replay_of, claimed_by FROM messages "
                f"WHERE state IN {DUE_STATES} AND (next_attempt_at IS NULL OR next_attempt_at <= ?) "
                "AND (claimed_by IS NULL OR claimed_by = ? OR claimed_until <= ?) "
                f"ORDER BY id LIMIT ?{db.dialect.skip_locked}",
                (ts(now), owner, ts(now), limit),
            ).fetchall()
            take(db, "messages", "message.taken_over", owner, until, rows)
            return [Due(int(r[0]), int(r[1]), bool(r[2]) or r[3] is not None) for r in rows]

        return self._tx(work, durable=False)

    def renew_claims(self, owner: str, until: datetime) -> int:
        def work(db: Db) -> int:
            messages = db.execute(
                f"UPDATE messages SET claimed_until = ? WHERE claimed_by = ? AND state IN {DUE_STATES}",
                (ts(until), owner),
            )
            deliveries = db.execute(
                "UPDATE deliveries SET claimed_until = ? WHERE claimed_by = ? AND status = 'pending'",
                (ts(until), owner),
            )
            return messages.rowcount + deliveries.rowcount

        return self._tx(work, durable=False)

    def release_claims(self, owner: str | None) -> int:
        """Free what ``owner`` holds (stopping: another daemon may take it at once), or
        (None) every claim (a daemon alone on its store, at its start)."""

        def work(db: Db) -> int:
            where, args = ("claimed_by = ?", (owner,)) if owner else ("claimed_by IS NOT NULL", ())
            free = "SET claimed_by = NULL, claimed_until = NULL WHERE"
            n = db.execute(f"UPDATE messages {free} {where} AND state IN {DUE_STATES}", args).rowcount
            d = db.execute(f"UPDATE deliveries {free} {where} AND status = 'pending'", args).rowcount
            return n + d

        return self._tx(work)

    def held_deliveries(self, owner: str, delivery_ids: Sequence[int]) -> list[int]:
        """Those of the deliveries ``owner`` still holds (the others are logged)."""
        return self._tx(lambda db: self._held_deliveries(db, delivery_ids, owner), durable=False)

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        """Whether this daemon may do the periodic job ``name`` now: True while no other daemon
        does it (a PostgreSQL advisory lock, held on a connection of its own until the job
        ends); always True on the SQLite file, which has one daemon."""
        with self._backend.advisory_lock(ADVISORY_CLASS, advisory_key(name)) as held:
            yield held

    # -- committing what a claim took -----------------------------------------------------------

    @staticmethod
    def _holders(
        db: Db, table: Literal["messages", "deliveries"], ids: Sequence[int]
    ) -> dict[int, str | None]:
        """Who holds each of these rows now, the rows locked until the commit (in id order, as
        every transaction that locks several takes them)."""
        holders: dict[int, str | None] = {}
        for part in chunks(ids):
            held = db.execute(
                f"SELECT id, claimed_by FROM {table} WHERE id IN ({marks(part)}) ORDER BY id{db.dialect.for_update}",
                part,
            )
            for r in held:
                holders[int(r[0])] = r[1]
        return holders

    @staticmethod
    def _held_messages(db: Db, changes: Sequence[Change], owner: str | None) -> list[Change]:
        """The changes for messages ``owner`` still holds (all of them when no owner is given:
        an operator's change, or a store used without claims); the others are logged."""
        if owner is None or not changes:
            return list(changes)
        holders = ClaimQueries._holders(db, "messages", [c.message_id for c in changes])
        kept = []
        for c in changes:
            holder = holders.get(c.message_id, owner)  # an unknown id: ``apply`` says so
            if holder == owner:
                kept.append(c)
            else:
                log.warning("message.claim_lost", message_id=c.message_id, owner=owner, held_by=holder,
                            action="not committed here: the daemon that holds it now processes it")  # fmt: skip
        return kept

    @staticmethod
    def _held_deliveries(db: Db, delivery_ids: Sequence[int], owner: str | None) -> list[int]:
        if owner is None or not delivery_ids:
            return list(delivery_ids)
        holders = ClaimQueries._holders(db, "deliveries", delivery_ids)
        kept = []
        for i in delivery_ids:
            if holders.get(i, owner) == owner:
                kept.append(i)
            else:
                log.warning("delivery.claim_lost", delivery_id=i, owner=owner, held_by=holders.get(i),
                            action="not marked here: the daemon that holds it now marks it")  # fmt: skip
        return kept
