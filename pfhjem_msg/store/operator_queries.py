"""What operators do to the store: list, look into, move by hand, replay, audit, prune.

Each change is one transaction that checks the message is still in the state the operator
saw (the daemon may have moved it meanwhile), appends the event with the operator as actor,
and writes the audit entry. Listings use the indexes of migration 3, so they stay fast with a
million messages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pfhjem_msg.errors import NoSuchMessage, OperatorRefused
from pfhjem_msg.lifecycle import ALL_STATES, PRUNABLE, UNFINISHED, may_prune, operator_move
from pfhjem_msg.store.base import (
    AuditEntry,
    ClaimHolder,
    DeliveryInfo,
    DeliveryRow,
    MessageFilter,
    MessageRow,
    PruneResult,
    RefusedFile,
    StatusFacts,
)
from pfhjem_msg.store.claims import DUE_STATES
from pfhjem_msg.store.core import StoreCore
from pfhjem_msg.store.rows import DELIVERY_SELECT, chunks, delivery_row, marks, message_row, parse_ts, ts
from pfhjem_msg.store.sql import Db, Row

FOLLOWED_UP = "SELECT e.source_message_id FROM episodes e JOIN followups f ON f.episode_id = e.id WHERE f.status = 'open'"
"""Messages an open follow-up still needs: the case unit finds the patient through them."""


class OperatorQueries(StoreCore):
    # -- reading ----------------------------------------------------------------------------

    def list_messages(self, f: MessageFilter) -> list[MessageRow]:
        where: list[str] = []
        args: list[Any] = []
        if f.states:
            where.append(f"state IN ({marks(f.states)})")
            args += list(f.states)
        for column, op, value in (
            ("received_at", ">=", ts(f.since) if f.since else None),
            ("received_at", "<", ts(f.until) if f.until else None),
            ("sender_her", "=", f.sender),
            ("receiver_her", "=", f.receiver),
            ("msg_type", "=", f.msg_type),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        if f.marked is not None:
            where.append("marked = ?")
            args.append(int(f.marked))
        sql = "SELECT * FROM messages" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY received_at DESC, id DESC"
        if f.limit is not None:
            sql += " LIMIT ?"
            args.append(f.limit)
        return [message_row(r) for r in self._read(sql, args)]

    def resolve(self, ident: str) -> list[int]:
        ident = ident.strip()
        if ident.isdigit():
            rows = self._read("SELECT id FROM messages WHERE id = ?", (int(ident),))
            if rows:
                return [rows[0][0]]
        return [r[0] for r in self._read("SELECT id FROM messages WHERE msg_id = ? ORDER BY id", (ident,))]

    def delivery_info(self, message_id: int) -> list[DeliveryInfo]:
        rows = self._read(
            "SELECT id, kind, followup_id, phase, transport, target, filename, her_id, out_msg_id, status, attempts, last_error, "
            "next_attempt_at, delivered_at, receipt_status, receipt_errors, receipt_at, receipt_overdue_at, "
            "service_id FROM deliveries WHERE message_id = ? ORDER BY id",
            (message_id,),
        )
        return [_delivery_info(r) for r in rows]

    def lineage(self, message_id: int) -> tuple[int | None, list[int]]:
        row = self._read("SELECT replay_of FROM messages WHERE id = ?", (message_id,))
        replays = self._read("SELECT id FROM messages WHERE replay_of = ? ORDER BY id", (message_id,))
        return (row[0][0] if row else None), [r[0] for r in replays]

    def apprec_sent(self, message_id: int) -> DeliveryRow | None:
        chain = [message_id]
        row = self._read("SELECT replay_of, msg_id, sender_her FROM messages WHERE id = ?", (message_id,))
        while row and row[0]["replay_of"] is not None and len(chain) < 100:
            chain.append(row[0]["replay_of"])
            row = self._read("SELECT replay_of, msg_id, sender_her FROM messages WHERE id = ?", (chain[-1],))
        first = self._read("SELECT msg_id, sender_her FROM messages WHERE id = ?", (message_id,))
        if first and first[0]["msg_id"]:  # the same message handed over again (a duplicate)
            chain += [r[0] for r in self._read(
                f"SELECT id FROM messages WHERE msg_id = ? AND sender_her {self._backend.dialect.same} ? LIMIT 100",
                (first[0]["msg_id"], first[0]["sender_her"]),
            )]  # fmt: skip
        rows = self._read(
            DELIVERY_SELECT + " WHERE d.kind = 'apprec' AND d.status = 'delivered' "
            f"AND d.message_id IN ({marks(chain)}) ORDER BY d.id LIMIT 1",
            chain,
        )
        return delivery_row(rows[0]) if rows else None

    # -- changes ----------------------------------------------------------------------------

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
        def work(db: Db) -> str:
            row = db.execute(
                "SELECT state, held_from FROM messages WHERE id = ?" + db.dialect.for_update, (message_id,)
            ).fetchone()
            if row is None:
                raise NoSuchMessage(message_id)
            state, held_from = row
            if state not in allowed:
                raise OperatorRefused(
                    f"message {message_id} is {state} now, not {' or '.join(sorted(allowed))}: "
                    "it changed meanwhile; look at it with `pfhjem-msg messages show` and try again"
                )
            move = operator_move(message_id, state, held_from, to_state, redraft=redraft, retry_failed=retry_failed,
                                 cancel_pending=cancel_pending, remember_held_from=remember_held_from)  # fmt: skip
            target = move.target
            if move.retry_failed:
                db.execute(
                    "UPDATE deliveries SET status='pending', attempts=0, next_attempt_at=? "
                    "WHERE message_id=? AND status='failed'",
                    (ts(now), message_id),
                )
            if move.cancel_pending:
                db.execute(
                    "UPDATE deliveries SET status='cancelled', last_error=? "
                    "WHERE message_id=? AND status IN ('pending', 'failed')",
                    (f"cancelled by {actor}", message_id),
                )
                db.execute(  # a discarded message plans nothing: its follow-ups end with it
                    "UPDATE followups SET status='cancelled', closed_at=?, closed_by=?, note=? WHERE status='open' "
                    "AND episode_id IN (SELECT id FROM episodes WHERE source_message_id=?)",
                    (ts(now), actor, f"the message was discarded: {reason}", message_id),
                )
            due = ts(now) if move.due_now else None
            db.execute(
                "UPDATE messages SET state=?, state_reason=?, held_from=?, redraft=?, attempts=0, "
                "next_attempt_at=?, updated_at=? WHERE id=?",
                (target, reason, move.held_from, int(move.again), due, ts(now), message_id),
            )
            self._event(db, message_id, now, actor, state, target, reason)
            self._audit(db, actor, f"{state} → {target}", message_id, reason, now)
            if target == "routed":
                self._finish_if_delivered(db, message_id, now)
            return str(state)

        return self._tx(work)

    def replay_as_new(self, message_id: int, actor: str, reason: str, now: datetime) -> int:
        def work(db: Db) -> int:
            row = db.execute(
                "SELECT m.raw_id, m.msg_id, m.msg_type, m.sender_her, m.receiver_her, m.marked, r.bytes IS NULL "
                "FROM messages m JOIN raw r ON r.id = m.raw_id WHERE m.id = ?",
                (message_id,),
            ).fetchone()
            if row is None:
                raise NoSuchMessage(message_id)
            if row[6]:
                raise OperatorRefused(
                    f"message {message_id}'s original was deleted by retention: nothing to replay"
                )
            new = db.insert(
                "INSERT INTO messages(raw_id, received_at, source, state, next_attempt_at, updated_at, msg_id, "
                "msg_type, sender_her, receiver_her, marked, replay_of) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    row[0],
                    ts(now),
                    f"replay:{message_id}",
                    "received",
                    ts(now),
                    ts(now),
                    *row[1:6],
                    message_id,
                ),
            )
            self._event(db, new, now, actor, None, "received", f"replay of message {message_id}: {reason}")
            self._event(db, message_id, now, actor, None, None, f"replayed as message {new}: {reason}")
            self._audit(db, actor, "replay as new message", message_id, f"message {new}: {reason}", now)
            return int(new)

        return self._tx(work)

    # -- audit ------------------------------------------------------------------------------

    def audit(self, actor: str, action: str, message_id: int | None, detail: str, now: datetime) -> None:
        self._tx(lambda db: self._audit(db, actor, action, message_id, detail, now))

    def audit_entries(self, since: datetime | None, limit: int | None = None) -> list[AuditEntry]:
        rows = self._read(
            "SELECT at, actor, action, message_id, detail FROM audit WHERE at >= ? ORDER BY id"
            + (" LIMIT ?" if limit else ""),
            (ts(since) if since else "", *([limit] if limit else [])),
        )
        return [AuditEntry(datetime.fromisoformat(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    # -- status -----------------------------------------------------------------------------

    def status_facts(self, now: datetime, receipt_deadline: datetime) -> StatusFacts:
        counts = {r[0]: r[1] for r in self._read("SELECT state, COUNT(*) FROM messages GROUP BY state")}
        oldest: tuple[int, datetime] | None = None
        for state in (s for s in ALL_STATES if s in UNFINISHED):
            if not counts.get(state):
                continue
            r = self._read(
                "SELECT id, received_at FROM messages WHERE state = ? ORDER BY received_at LIMIT 1", (state,)
            )
            if r and (oldest is None or datetime.fromisoformat(r[0][1]) < oldest[1]):
                oldest = (r[0][0], datetime.fromisoformat(r[0][1]))
        last = self._read(
            "SELECT received_at FROM messages WHERE source NOT LIKE 'replay:%' ORDER BY received_at DESC LIMIT 1"
        )
        waiting = self._read("SELECT COUNT(*), MIN(created_at) FROM deliveries WHERE status = 'pending'")
        overdue = self._read(
            "SELECT COUNT(*) FROM deliveries WHERE kind = 'gp_copy' AND status = 'delivered' "
            "AND receipt_at IS NULL AND delivered_at <= ?",
            (ts(receipt_deadline),),
        )
        return StatusFacts(
            counts=counts,
            oldest_unfinished=oldest,
            last_intake=datetime.fromisoformat(last[0][0]) if last else None,
            deliveries_waiting=waiting[0][0],
            oldest_waiting_since=parse_ts(waiting[0][1]),
            receipts_overdue=overdue[0][0],
            claims=self.claim_holders(now),
        )

    def claim_holders(self, now: datetime) -> tuple[ClaimHolder, ...]:
        """Who holds which unfinished work, and how much of it waits on an expired lease: one
        query over both tables (claims are otherwise only in the logs)."""
        rows = self._read(
            "SELECT claimed_by, SUM(m), SUM(d), MAX(claimed_until), "
            "SUM(CASE WHEN claimed_until <= ? THEN 1 ELSE 0 END), "
            "MIN(CASE WHEN claimed_until <= ? THEN claimed_until END) FROM ("
            "SELECT claimed_by, claimed_until, 1 AS m, 0 AS d FROM messages "
            f"WHERE claimed_by IS NOT NULL AND state IN {DUE_STATES} "
            "UNION ALL SELECT claimed_by, claimed_until, 0 AS m, 1 AS d FROM deliveries "
            "WHERE claimed_by IS NOT NULL AND status = 'pending'"
            ") held GROUP BY claimed_by ORDER BY claimed_by",
            (ts(now), ts(now)),
        )
        return tuple(
            ClaimHolder(str(r[0]), int(r[1]), int(r[2]), parse_ts(r[3]), int(r[4]), parse_ts(r[5]))
            for r in rows
        )

    def refused_files(self, acknowledged: bool = False, limit: int = 100) -> list[RefusedFile]:
        rows = self._read(
            "SELECT id, at, source, name, reason, size, acknowledged_at FROM refused"
            + ("" if acknowledged else " WHERE acknowledged_at IS NULL")
            + " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [RefusedFile(r[0], datetime.fromisoformat(r[1]), r[2], r[3], r[4], r[5], parse_ts(r[6]))
                for r in rows]  # fmt: skip

    def acknowledge_refused(self, actor: str, now: datetime) -> int:
        def work(db: Db) -> int:
            count = db.execute(
                "UPDATE refused SET acknowledged_at = ?, acknowledged_by = ? WHERE acknowledged_at IS NULL",
                (ts(now), actor),
            ).rowcount
            if count:
                self._audit(db, actor, "acknowledge refused", None, f"{count} refused file(s) seen", now)
            return count

        return self._tx(work)

    # -- retention --------------------------------------------------------------------------

    def prune(self, payload_before: datetime, metadata_before: datetime | None, now: datetime,
              dry_run: bool = False) -> PruneResult:  # fmt: skip
        states = ",".join(f"'{s}'" for s in sorted(PRUNABLE))
        before = self._backend.size()

        def candidates(db: Db, cutoff: datetime, extra: str) -> list[int]:
            """The store narrows by index; the lifecycle decides each row."""
            rows = db.execute(
                f"SELECT id, state, updated_at, id IN ({FOLLOWED_UP}) FROM messages "
                f"WHERE state IN ({states}) AND updated_at < ?{extra} ORDER BY id",
                (ts(cutoff),),
            )
            return [r[0] for r in rows
                    if may_prune(r[1], datetime.fromisoformat(r[2]), cutoff, needed_by_open_followup=bool(r[3]))]  # fmt: skip

        def work(db: Db) -> tuple[int, int]:
            ids = candidates(db, payload_before, " AND pruned_at IS NULL")
            old = candidates(db, metadata_before, "") if metadata_before is not None else []
            if dry_run:
                return len(ids), len(old)
            for chunk in chunks(ids):
                qs = marks(chunk)
                db.execute(f"UPDATE messages SET pruned_at=? WHERE id IN ({qs})", (ts(now), *chunk))
                db.execute(f"UPDATE deliveries SET payload=? WHERE message_id IN ({qs})", (b"", *chunk))
            # An original goes when no message that still needs it refers to it.
            db.execute(
                "UPDATE raw SET bytes = NULL WHERE bytes IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM messages m WHERE m.raw_id = raw.id AND m.pruned_at IS NULL)"
            )
            for chunk in chunks(old):
                qs = marks(chunk)
                db.execute(f"UPDATE messages SET replay_of=NULL WHERE replay_of IN ({qs})", chunk)
                db.execute(f"DELETE FROM followups WHERE episode_id IN (SELECT id FROM episodes "
                           f"WHERE source_message_id IN ({qs}))", chunk)  # fmt: skip
                db.execute(f"DELETE FROM episodes WHERE source_message_id IN ({qs})", chunk)
                db.execute(f"DELETE FROM events WHERE message_id IN ({qs})", chunk)
                db.execute(f"DELETE FROM edi2_messages WHERE message_id IN ({qs})", chunk)
                db.execute(f"DELETE FROM deliveries WHERE message_id IN ({qs})", chunk)
                db.execute(f"DELETE FROM messages WHERE id IN ({qs})", chunk)
            db.execute("DELETE FROM raw WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.raw_id = raw.id)")
            if metadata_before is not None:
                db.execute("DELETE FROM refused WHERE acknowledged_at < ?", (ts(metadata_before),))
            return len(ids), len(old)

        payloads, messages = self._tx(work)
        if not dry_run and (payloads or messages):
            self._backend.compact()
        return PruneResult(payloads, messages, before, self._backend.size())


def _delivery_info(r: Row) -> DeliveryInfo:
    return DeliveryInfo(
        r["id"], r["kind"], r["transport"], r["target"], r["filename"], r["her_id"], r["out_msg_id"],
        r["status"], r["attempts"], r["last_error"], parse_ts(r["next_attempt_at"]), parse_ts(r["delivered_at"]),
        r["receipt_status"], r["receipt_errors"], parse_ts(r["receipt_at"]), parse_ts(r["receipt_overdue_at"]),
        r["service_id"], r["followup_id"], r["phase"],
    )  # fmt: skip
