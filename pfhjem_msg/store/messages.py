"""The store: what the daemon does to messages, written once for both backends; what operators
do is in ``operator_queries``, the follow-up plan in ``followup_queries``, the message service
in ``edi2_queries``. ``SqlStore`` is all of them over one backend."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pfhjem_msg.errors import NoSuchMessage, StoreError
from pfhjem_msg.lifecycle import POSTED_BY_INTAKE, PROCESSING, State, may_send_sql
from pfhjem_msg.store.base import (
    Accepted,
    Change,
    DeliveryRow,
    DeliverySpec,
    Due,
    Event,
    MessageRow,
    Receipt,
    RefusedReason,
    Transition,
)
from pfhjem_msg.store.claims import ClaimQueries, take
from pfhjem_msg.store.delivery_columns import SLOT
from pfhjem_msg.store.edi2_queries import Edi2Queries
from pfhjem_msg.store.followup_queries import FollowupQueries
from pfhjem_msg.store.operator_queries import OperatorQueries
from pfhjem_msg.store.rows import DELIVERY_SELECT, chunks, delivery_row, marks, message_row, ts
from pfhjem_msg.store.sql import Db

_MAY_SEND = may_send_sql("m.state", "d.kind")
"""``lifecycle.may_send`` as a filter, so the LIMIT counts only deliveries that may go out."""
_SENT_HERE = "d.transport NOT IN ({})".format(",".join(f"'{t}'" for t in sorted(POSTED_BY_INTAKE)))
"""Our AppRec for a message that came over EDI 2.0 is posted by the intake, never by ``deliver_due``."""


class SqlStore(ClaimQueries, OperatorQueries, FollowupQueries, Edi2Queries):
    """Every store protocol over one backend (``SqliteStore``, ``PostgresStore``)."""

    # -- intake ------------------------------------------------------------------------------

    def accept(self, raw: bytes, source: str, now: datetime) -> Accepted:
        return self.accept_many([(raw, source)], now)[0]

    def accept_many(self, items: Sequence[tuple[bytes, str]], now: datetime) -> list[Accepted]:
        def work(db: Db) -> list[Accepted]:
            return [self._store_raw(db, raw, source, now) for raw, source in items]

        return self._tx(work)

    def record_refused(self, source: str, name: str, reason: RefusedReason, size: int | None,
                       now: datetime) -> int:  # fmt: skip
        def work(db: Db) -> int:
            row = db.execute(
                "SELECT id FROM refused WHERE acknowledged_at IS NULL AND source = ? AND name = ? AND reason = ? "
                f"AND size {db.dialect.same} ?",
                (source, name, reason, size),
            ).fetchone()
            if row is not None:
                return int(row[0])
            return db.insert(
                "INSERT INTO refused(at, source, name, reason, size) VALUES (?,?,?,?,?)",
                (ts(now), source, name, reason, size),
            )

        return self._tx(work)

    def raw(self, message_id: int) -> bytes:
        rows = self._read(
            "SELECT r.bytes FROM messages m JOIN raw r ON r.id = m.raw_id WHERE m.id = ?", (message_id,)
        )
        if not rows or rows[0][0] is None:
            raise StoreError(f"message {message_id} has no stored original (unknown id, or pruned)")
        return bytes(rows[0][0])

    def message(self, message_id: int) -> MessageRow | None:
        rows = self._read("SELECT * FROM messages WHERE id = ?", (message_id,))
        if not rows:
            return None
        return message_row(rows[0])

    # -- processing --------------------------------------------------------------------------

    def due_messages(self, now: datetime, limit: int) -> list[Due]:
        rows = self._read(
            "SELECT id, attempts, redraft != 0 OR replay_of IS NOT NULL FROM messages "
            "WHERE state IN ('received', 'parsed', 'classified') "
            "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) ORDER BY id LIMIT ?",
            (ts(now), limit),
        )
        return [Due(r[0], r[1], bool(r[2])) for r in rows]

    def begin_attempts(self, message_ids: Sequence[int], now: datetime) -> dict[int, int]:
        def work(db: Db) -> dict[int, int]:
            out: dict[int, int] = {}
            for part in chunks(message_ids):
                rows = db.execute(
                    "UPDATE messages SET attempts = attempts + 1, updated_at = ? "
                    f"WHERE id IN ({marks(part)}) RETURNING id, attempts",
                    (ts(now), *part),
                ).fetchall()
                out.update((int(i), int(n)) for i, n in rows)
            return {i: out[i] for i in message_ids if i in out}

        return self._tx(work, durable=False)

    def find_duplicate(self, message_id: int, msg_id: str, sender_her: str | None) -> int | None:
        rows = self._read(
            f"SELECT id FROM messages WHERE msg_id = ? AND sender_her {self._backend.dialect.same} ? AND id < ? "
            "AND state != 'discarded' "
            "ORDER BY id LIMIT 1",
            (msg_id, sender_her, message_id),
        )
        return rows[0][0] if rows else None

    def transition(self, message_id: int, steps: Sequence[Transition], now: datetime,
                   deliveries: Sequence[DeliverySpec] = (), on_delivered: State = "done") -> None:  # fmt: skip
        self.apply([Change(message_id, steps, deliveries, on_delivered)], now)

    def apply(self, changes: Sequence[Change], now: datetime, owner: str | None = None) -> None:
        def work(db: Db) -> None:
            for change in self._held_messages(db, changes, owner):
                self._apply(db, change, now)

        self._tx(work, durable=False)

    def _apply(self, db: Db, c: Change, now: datetime) -> None:
        row = db.execute(
            "SELECT state, redraft FROM messages WHERE id = ?" + db.dialect.for_update, (c.message_id,)
        ).fetchone()
        if row is None:
            raise NoSuchMessage(c.message_id)
        if row[0] not in PROCESSING:
            return  # an operator held or discarded it while it was being drafted: they decide
        if self._refused(db, c.message_id, row[0], [s.to_state for s in c.steps], now):
            return
        if c.receipt is not None:
            self._receipt(db, c.receipt, now)
        state, redraft = row
        at = ts(now)
        events = []
        for step in c.steps:
            events.append((c.message_id, at, step.actor, state, step.to_state, step.reason))
            state = step.to_state
        db.executemany(
            "INSERT INTO events(message_id, at, actor, from_state, to_state, reason) VALUES (?,?,?,?,?,?)",
            events,
        )
        # Replayed from the start: what was not delivered is replaced by the new draft (the
        # configuration may have changed); what was delivered stays as it was.
        conflict = (
            f"ON CONFLICT({SLOT}) DO UPDATE SET transport=excluded.transport, target=excluded.target, "
            "filename=excluded.filename, payload=excluded.payload, her_id=excluded.her_id, "
            "out_msg_id=excluded.out_msg_id, original=excluded.original, status='pending', attempts=0, "
            "next_attempt_at=excluded.next_attempt_at, created_at=excluded.created_at, receipt_status=NULL, receipt_errors=NULL, "
            "receipt_at=NULL, receipt_overdue_at=NULL, delivered_at=NULL "
            "WHERE deliveries.status != 'delivered' OR "
            "(deliveries.kind = 'gp_copy' AND deliveries.receipt_status NOT IN ('1'))"
            if redraft
            else f"ON CONFLICT({SLOT}) DO NOTHING"
        )
        db.executemany(
            "INSERT INTO deliveries(message_id, kind, followup_id, phase, transport, target, filename, payload, "
            "her_id, out_msg_id, next_attempt_at, created_at, original) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
            + conflict,
            [
                (
                    c.message_id,
                    d.kind,
                    d.followup_id,
                    d.phase,
                    d.transport,
                    d.target,
                    d.filename,
                    b"" if d.original else d.payload,
                    d.her_id,
                    d.out_msg_id,
                    at,
                    at,
                    int(d.original),
                )
                for d in c.deliveries
            ],
        )
        if redraft:
            # No new deliveries: every one not delivered goes (PostgreSQL refuses ``NOT IN ()``).
            kinds = [d.kind for d in c.deliveries]
            still_due = f" AND kind NOT IN ({marks(kinds)})" if kinds else ""
            db.execute(
                "UPDATE deliveries SET status='cancelled', last_error='no longer due after the replay' "
                f"WHERE message_id=? AND status != 'delivered'{still_due}",
                (c.message_id, *kinds),
            )
            db.execute("UPDATE messages SET redraft=0 WHERE id=?", (c.message_id,))
        if c.followup is not None and state == "routed":
            self._plan(db, c.message_id, c.followup, now)
        reason = c.steps[-1].reason if c.steps else None
        facts = ""
        args: tuple[object, ...] = ()
        if c.facts is not None:
            f = c.facts
            facts = ", msg_id=?, msg_type=?, sender_her=?, receiver_her=?, marked=?"
            args = (
                f.msg_id,
                f.msg_type,
                f.sender_her,
                f.receiver_her,
                None if f.marked is None else int(f.marked),
            )
        db.execute(
            "UPDATE messages SET state=?, state_reason=?, attempts=0, next_attempt_at=NULL, updated_at=?, "
            f"on_delivered=?{facts} WHERE id=?",
            (state, reason, at, c.on_delivered, *args, c.message_id),
        )
        if state == "routed" and (redraft or not c.deliveries):  # new deliveries are pending: not done yet
            self._finish_if_delivered(db, c.message_id, now)

    def postpone(self, message_id: int, retry_at: datetime, error: str, now: datetime) -> None:
        def work(db: Db) -> None:
            db.execute("UPDATE messages SET next_attempt_at=?, updated_at=? WHERE id=?",
                       (ts(retry_at), ts(now), message_id))  # fmt: skip
            self._event(db, message_id, now, "daemon", None, None, error)

        self._tx(work)

    # -- deliveries --------------------------------------------------------------------------

    def due_deliveries(self, now: datetime, limit: int) -> list[DeliveryRow]:
        rows = self._read(
            DELIVERY_SELECT + " "
            f"WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND {_SENT_HERE} "
            f"AND {_MAY_SEND} ORDER BY d.next_attempt_at, d.id LIMIT ?",
            (ts(now), limit),
        )
        return [delivery_row(r) for r in rows]

    def claim_deliveries(self, owner: str, now: datetime, until: datetime, limit: int) -> list[DeliveryRow]:
        """``due_deliveries`` that nobody else holds (``store.claims``), now held by ``owner``.
        Only the deliveries' rows are locked: their messages stay free for the daemon that
        finishes them."""

        def work(db: Db) -> list[DeliveryRow]:
            rows = db.execute(
                "SELECT d.id, d.claimed_by FROM deliveries d "
                f"WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND {_SENT_HERE} "
                "AND (d.claimed_by IS NULL OR d.claimed_by = ? OR d.claimed_until <= ?) "
                f"AND EXISTS (SELECT 1 FROM messages m WHERE m.id = d.message_id AND {_MAY_SEND}) "
                f"ORDER BY d.next_attempt_at, d.id LIMIT ?{db.dialect.skip_locked}",
                (ts(now), owner, ts(now), limit),
            ).fetchall()
            ids = take(db, "deliveries", "delivery.taken_over", owner, until, rows)
            out: list[DeliveryRow] = []
            for part in chunks(ids):
                out += [
                    delivery_row(r)
                    for r in db.execute(DELIVERY_SELECT + f" WHERE d.id IN ({marks(part)})", part)
                ]
            order = {i: n for n, i in enumerate(ids)}
            return sorted(out, key=lambda d: order[d.id])

        # Durable, because what it returns is sent next: a durable commit flushes the log up to
        # it, with the processing steps committed non-durably before (SQLite's WAL is one file
        # written in order; PostgreSQL's WAL too), so after a power loss a message whose AppRec
        # went out is not drafted again with a new AppRec Id: its delivery is still there.
        return self._tx(work, durable=True)

    def deliveries(self, message_id: int) -> list[DeliveryRow]:
        rows = self._read(DELIVERY_SELECT + " WHERE d.message_id = ? ORDER BY d.id", (message_id,))
        return [delivery_row(r) for r in rows]

    def delivered(self, delivery_ids: Sequence[int], now: datetime,
                  owner: str | None = None) -> list[tuple[int, str]]:  # fmt: skip
        def work(db: Db) -> list[tuple[int, str]]:
            # The messages' rows first, in id order, as an operator's move locks the message and
            # then its deliveries: deliveries first would deadlock with it on PostgreSQL.
            for part in chunks(delivery_ids):
                db.execute(
                    "SELECT id FROM messages WHERE id IN (SELECT message_id FROM deliveries "
                    f"WHERE id IN ({marks(part)})) ORDER BY id{db.dialect.for_update}",
                    part,
                ).fetchall()
            touched: set[int] = set()
            for part in chunks(self._held_deliveries(db, delivery_ids, owner)):
                rows = db.execute(
                    "UPDATE deliveries SET status='delivered', attempts=attempts+1, delivered_at=?, last_error=NULL "
                    f"WHERE id IN ({marks(part)}) AND status='pending' RETURNING message_id",
                    (ts(now), *part),
                ).fetchall()
                touched.update(r[0] for r in rows)
            finished = []
            for message_id in sorted(touched):
                final = self._finish_if_delivered(db, message_id, now)
                if final:
                    finished.append((message_id, final))
            return finished

        return self._tx(work)

    def delivery_failed(self, delivery_id: int, error: str, now: datetime, retry_at: datetime | None,
                        owner: str | None = None) -> None:  # fmt: skip
        def work(db: Db) -> None:
            row = db.execute("SELECT message_id, kind FROM deliveries WHERE id=?", (delivery_id,)).fetchone()
            if row is None:
                return
            message_id, kind = row
            # The message's row first, as an operator's move locks it (then its deliveries).
            state = self._locked_state(db, message_id)
            if not self._held_deliveries(db, [delivery_id], owner):
                return
            if retry_at is not None:
                db.execute(
                    "UPDATE deliveries SET attempts=attempts+1, last_error=?, next_attempt_at=? WHERE id=?",
                    (error, ts(retry_at), delivery_id),
                )
                return
            db.execute("UPDATE deliveries SET status='failed', attempts=attempts+1, last_error=? WHERE id=?",
                       (error, delivery_id))  # fmt: skip
            reason = f"the {kind} delivery failed for good: {error}"
            if state == "failed":  # failed already (another delivery): a note, not a move
                self._event(db, message_id, now, "daemon", None, None, reason)
                return
            if self._refused(db, message_id, state, ["failed"], now):
                return
            self._event(db, message_id, now, "daemon", state, "failed", reason)
            db.execute("UPDATE messages SET state='failed', state_reason=?, updated_at=? WHERE id=?",
                       (reason, ts(now), message_id))  # fmt: skip

        self._tx(work)

    # -- receipts and history --------------------------------------------------------------

    def events(self, message_id: int) -> list[Event]:
        rows = self._read("SELECT * FROM events WHERE message_id = ? ORDER BY id", (message_id,))
        return [
            Event(datetime.fromisoformat(r["at"]), r["actor"], r["from_state"], r["to_state"], r["reason"])
            for r in rows
        ]

    def outgoing(self, out_msg_id: str) -> DeliveryRow | None:
        rows = self._read(DELIVERY_SELECT + " WHERE d.out_msg_id = ? LIMIT 1", (out_msg_id,))
        return delivery_row(rows[0]) if rows else None

    def record_receipt(self, delivery_id: int, status: str, errors: str, now: datetime,
                       hold_reason: str | None) -> None:  # fmt: skip
        self._tx(lambda db: self._receipt(db, Receipt(delivery_id, status, errors, hold_reason), now))

    def _receipt(self, db: Db, r: Receipt, now: datetime) -> None:
        if r.hold_reason:  # the message's row first, as an operator's move locks it
            message_id = db.execute(
                "SELECT message_id FROM deliveries WHERE id=?", (r.delivery_id,)
            ).fetchone()[0]
            state = self._locked_state(db, message_id)
        db.execute("UPDATE deliveries SET receipt_status=?, receipt_errors=?, receipt_at=? WHERE id=?",
                   (r.status, r.errors, ts(now), r.delivery_id))  # fmt: skip
        if r.hold_reason:
            if state in ("held", "failed"):  # a person must look at it already: a note, not a move
                self._event(db, message_id, now, "daemon", None, None, r.hold_reason)
                return
            if self._refused(db, message_id, state, ["held"], now):
                return
            self._event(db, message_id, now, "daemon", state, "held", r.hold_reason)
            db.execute("UPDATE messages SET state='held', state_reason=?, updated_at=? WHERE id=?",
                       (r.hold_reason, ts(now), message_id))  # fmt: skip

    @staticmethod
    def _locked_state(db: Db, message_id: int) -> str:
        """The message's state, its row locked until the commit: on PostgreSQL an operator's
        move committed meanwhile is what the daemon's move is checked against, and is not
        written over (SQLite's writers take turns)."""
        return str(
            db.execute(
                "SELECT state FROM messages WHERE id=?" + db.dialect.for_update, (message_id,)
            ).fetchone()[0]
        )

    def overdue_receipts(self, before: datetime) -> list[DeliveryRow]:
        rows = self._read(
            DELIVERY_SELECT + " WHERE d.kind = 'gp_copy' AND d.status = 'delivered' AND d.receipt_at IS NULL "
            "AND d.delivered_at <= ? ORDER BY d.id",
            (ts(before),),
        )
        return [delivery_row(r) for r in rows]

    def flag_overdue_receipts(self, before: datetime, now: datetime) -> list[DeliveryRow]:
        def work(db: Db) -> list[DeliveryRow]:
            cur = db.execute(
                DELIVERY_SELECT + " WHERE d.kind = 'gp_copy' AND d.status = 'delivered' "
                "AND d.receipt_at IS NULL AND d.receipt_overdue_at IS NULL AND d.delivered_at <= ? ORDER BY d.id",
                (ts(before),),
            )
            rows = [delivery_row(r) for r in cur.fetchall()]
            for d in rows:
                db.execute("UPDATE deliveries SET receipt_overdue_at=? WHERE id=?", (ts(now), d.id))
                self._event(db, d.message_id, now, "daemon", None, None,
                            f"no AppRec for the GP copy (MsgId {d.out_msg_id}, to HER-id {d.her_id}) within "
                            "96 hours: ask the GP office or the hub whether it arrived")  # fmt: skip
            return rows

        return self._tx(work)

    def counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._read("SELECT state, COUNT(*) FROM messages GROUP BY state")}

    def close(self) -> None:
        self._backend.close()
