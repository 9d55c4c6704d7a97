"""What every part of the store shares: the backend it runs on, and the row operations the
message, operator, follow-up and EDI 2.0 queries all use (keeping bytes as a message, events,
audit entries, finishing a message whose deliveries are done)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from pfhjem_msg.errors import NoSuchMessage
from pfhjem_msg.lifecycle import illegal_daemon_move
from pfhjem_msg.logs import get_logger
from pfhjem_msg.store.base import Accepted
from pfhjem_msg.store.rows import ts
from pfhjem_msg.store.sql import Backend, Db, Row

T = TypeVar("T")
log = get_logger("pfhjem_msg.store")


class StoreCore:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    @property
    def where(self) -> str:
        """The store as an operator names it: its file, or its URL without the password."""
        return self._backend.where

    def schema_versions(self) -> tuple[int, int]:
        """The store's schema version when it was opened, and now (``store migrate``)."""
        return self._backend.version_before, self._backend.version

    def _tx(self, work: Callable[[Db], T], durable: bool = True) -> T:
        """Run ``work`` in one transaction, committed on return. ``durable``: on disk before it
        returns, as intake and deliveries need. Processing steps pass False: they survive a
        crash of the process, and after a power loss the last of them are simply done again
        from the stored original, which is safe because they are derived."""
        return self._backend.run(work, durable)

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        return self._backend.read(sql, args)

    def _exists(self, db: Db, message_id: int) -> str:
        """The message's state; ``NoSuchMessage`` when there is no such message."""
        row = db.execute("SELECT state FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise NoSuchMessage(message_id)
        return str(row[0])

    @classmethod
    def _store_raw(cls, db: Db, raw: bytes, source: str, now: datetime) -> Accepted:
        """Keep the bytes as a new message, or name the message that already has the same bytes
        (a hub's retry, the same message by two routes): one message per content, also when
        two daemons take the same bytes at once (the second insert of the bytes waits for the
        first's commit, inserts nothing, and finds the first's message)."""
        digest = hashlib.sha256(raw).hexdigest()
        known = "SELECT m.id FROM raw r JOIN messages m ON m.raw_id = r.id WHERE r.sha256 = ? ORDER BY m.id LIMIT 1"
        row = db.execute(known, (digest,)).fetchone()
        if row is not None:
            return Accepted(int(row[0]), False)
        inserted = db.execute(
            "INSERT INTO raw(sha256, size, bytes) VALUES (?,?,?) ON CONFLICT(sha256) DO NOTHING RETURNING id",
            (digest, len(raw), raw),
        ).fetchone()
        if inserted is None:
            row = db.execute(known, (digest,)).fetchone()
            if row is not None:
                return Accepted(int(row[0]), False)
            raw_id = int(db.execute("SELECT id FROM raw WHERE sha256 = ?", (digest,)).fetchone()[0])
        else:
            raw_id = int(inserted[0])
        message_id = db.insert(
            "INSERT INTO messages(raw_id, received_at, source, state, next_attempt_at, updated_at) "
            "VALUES (?,?,?,?,?,?)",
            (raw_id, ts(now), source, "received", ts(now), ts(now)),
        )
        cls._event(db, message_id, now, "daemon", None, "received", f"accepted from {source}")
        return Accepted(message_id, True)

    @staticmethod
    def _event(db: Db, message_id: int, now: datetime, actor: str,
               from_state: str | None, to_state: str | None, reason: str) -> None:  # fmt: skip
        db.execute(
            "INSERT INTO events(message_id, at, actor, from_state, to_state, reason) VALUES (?,?,?,?,?,?)",
            (message_id, ts(now), actor, from_state, to_state, reason),
        )

    @staticmethod
    def _audit(db: Db, actor: str, action: str, message_id: int | None, detail: str,
               now: datetime) -> None:  # fmt: skip
        db.execute(
            "INSERT INTO audit(at, actor, action, message_id, detail) VALUES (?,?,?,?,?)",
            (ts(now), actor, action, message_id, detail),
        )

    def _finish_if_delivered(self, db: Db, message_id: int, now: datetime) -> str | None:
        """The message reaches its final state when no delivery is left. Its row is locked
        first, so that of two transactions finishing its last deliveries at once the second
        counts after the first has committed, and one of them finishes it."""
        db.execute("SELECT id FROM messages WHERE id = ?" + db.dialect.for_update, (message_id,))
        state, target, left = db.execute(
            "SELECT state, on_delivered, (SELECT COUNT(*) FROM deliveries WHERE message_id = m.id "
            "AND status NOT IN ('delivered', 'cancelled')) FROM messages m WHERE id = ?",
            (message_id,),
        ).fetchone()
        if state != "routed" or left:
            return None
        if self._refused(db, message_id, "routed", ["delivered", target], now):
            return None
        at = ts(now)
        db.executemany(
            "INSERT INTO events(message_id, at, actor, from_state, to_state, reason) VALUES (?,?,?,?,?,?)",
            [
                (message_id, at, "daemon", "routed", "delivered", "every delivery is done"),
                (
                    message_id,
                    at,
                    "daemon",
                    "delivered",
                    target,
                    "negative AppRec sent" if target == "rejected" else "finished",
                ),
            ],
        )
        db.execute("UPDATE messages SET state=?, updated_at=? WHERE id=?", (target, ts(now), message_id))
        return str(target)

    def _refused(self, db: Db, message_id: int, current: str, targets: Sequence[str], now: datetime) -> bool:
        """Whether the lifecycle refuses the daemon's moves from ``current`` through ``targets``.
        A refused move is a bug: nothing of it is written, the error is logged with the message
        id and both states, and the message is held for an operator (the daemon may hold any
        message it still works on), with the move in its history; one it no longer works on
        keeps its state and gets the note."""
        move = illegal_daemon_move(current, targets)
        if move is None:
            return False
        log.error("store.illegal_transition", message_id=message_id, from_state=move[0], to_state=move[1],
                  state=current)  # fmt: skip
        reason = (
            f"the daemon would have moved this message from {move[0]} to {move[1]}, which the lifecycle "
            "does not allow (a bug); nothing of that was written"
        )
        if illegal_daemon_move(current, ["held"]) is not None:
            self._event(db, message_id, now, "daemon", None, None, reason)
            return True
        reason += (
            f"; held for an operator: see `pfhjem-msg messages show {message_id}`, then release or discard it"
        )
        self._event(db, message_id, now, "daemon", current, "held", reason)
        db.execute(
            "UPDATE messages SET state='held', state_reason=?, attempts=0, next_attempt_at=NULL, updated_at=? "
            "WHERE id=?",
            (reason, ts(now), message_id),
        )
        return True
