"""The message service ("EDI 2.0") in the store: each service message linked to ours, and where it
is in the exactly-once protocol of ``pfhjem_msg.edi2.intake`` (stored → AppRec intended →
posted → read, or held for an operator); the service's id of what we sent through it; and the
intake's health for ``status``.

Every step is one transaction, so a crash leaves a service message at a step the intake can
resume from. Our AppRec for a service message is an ordinary ``apprec`` delivery (transport
``edi2_apprec``): its payload is what we decided, and posting it marks it delivered in the
same transaction as the protocol's ``posted``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pfhjem_msg.lifecycle import PROCESSING, TERMINAL, UNFINISHED, WAITING
from pfhjem_msg.store.base import Accepted, DeliveryRow, Edi2IntakeFacts, Edi2Link
from pfhjem_msg.store.core import StoreCore
from pfhjem_msg.store.rows import DELIVERY_SELECT, delivery_row, parse_ts, ts
from pfhjem_msg.store.sql import Db, Row

if TYPE_CHECKING:
    # Only the daemon's EDI 2.0 intake calls what needs these at run time (imported there):
    # operator commands open the store without loading the HTTP and JWT libraries.
    from pfhjem_msg.edi2.answer import AppRecAnswer
    from pfhjem_msg.edi2.intake import Edi2Health, Edi2Record, _NoAppRec


def _record(r: Row) -> Edi2Record:
    from pfhjem_msg.edi2.intake import Edi2Record

    held = r["held"] if r["state"] == "held" else None  # released by an operator: resumed
    return Edi2Record(r["service_id"], r["message_id"], r["receiver_her"], bool(r["is_apprec"]),
                      bool(r["answers"]), r["apprec"], r["read_at"] is not None, held)  # fmt: skip


_RECORD = "SELECT e.*, m.state FROM edi2_messages e JOIN messages m ON m.id = e.message_id"


class Edi2Queries(StoreCore):
    def edi2_accept(self, raw: bytes, service_id: str, receiver_her: int, is_apprec: bool,
                    now: datetime) -> Accepted:  # fmt: skip
        source = f"edi2:{service_id}"

        def work(db: Db) -> Accepted:
            known = db.execute(
                "SELECT message_id FROM edi2_messages WHERE service_id = ?", (service_id,)
            ).fetchone()
            if known is not None:
                return Accepted(int(known[0]), False)
            stored = self._store_raw(db, raw, source, now)
            message_id, new = stored.message_id, stored.new
            if not new:  # another daemon may have taken this service message while we waited for its bytes
                known = db.execute(
                    "SELECT message_id FROM edi2_messages WHERE service_id = ?", (service_id,)
                ).fetchone()
                if known is not None:
                    return Accepted(int(known[0]), False)
            answers = (
                db.execute("SELECT 1 FROM edi2_messages WHERE message_id = ?", (message_id,)).fetchone()
                is None
            )
            db.execute(
                "INSERT INTO edi2_messages(service_id, message_id, receiver_her, is_apprec, answers, created_at, "
                "updated_at) VALUES (?,?,?,?,?,?,?)",
                (service_id, message_id, receiver_her, int(is_apprec), int(answers), ts(now), ts(now)),
            )
            if not new:
                self._event(db, message_id, now, "daemon", None, None,
                            f"the same bytes came again from the message service ({service_id}); "
                            + ("it is answered for" if answers else "only the first is answered"))  # fmt: skip
            return Accepted(message_id, new)

        return self._tx(work)

    def edi2_record(self, service_id: str) -> Edi2Record | None:
        rows = self._read(_RECORD + " WHERE e.service_id = ?", (service_id,))
        return _record(rows[0]) if rows else None

    def edi2_unsettled(self, limit: int) -> list[Edi2Record]:
        rows = self._read(
            _RECORD + " WHERE e.read_at IS NULL AND (e.held IS NULL OR m.state != 'held') "
            "ORDER BY e.created_at, e.service_id LIMIT ?",
            (limit,),
        )
        return [_record(r) for r in rows]

    def edi2_answer(self, message_id: int) -> AppRecAnswer | _NoAppRec | None:
        from pfhjem_msg.edi2.answer import AppRecAnswer
        from pfhjem_msg.edi2.intake import NO_APPREC

        rows = self._read("SELECT state, held_from FROM messages WHERE id = ?", (message_id,))
        if not rows:
            return None
        state, held_from = rows[0]
        apprec = self._read(DELIVERY_SELECT + " WHERE d.message_id = ? AND d.kind = 'apprec'", (message_id,))
        if apprec:
            d = delivery_row(apprec[0])
            if d.transport != "edi2_apprec":
                return NO_APPREC  # the same bytes came first another way, and were answered that way
            return AppRecAnswer.from_xml(d.payload)
        if state in PROCESSING or (state in WAITING and held_from is not None):
            return None  # not decided yet, or held by an operator before it was
        if state in TERMINAL or state in UNFINISHED or state in WAITING:
            return NO_APPREC
        return None

    def edi2_apprec_intent(self, service_id: str, now: datetime) -> None:
        self._tx(lambda db: db.execute(
            "UPDATE edi2_messages SET apprec = 'intent', updated_at = ? WHERE service_id = ? AND apprec = 'none'",
            (ts(now), service_id),
        ))  # fmt: skip

    def edi2_apprec_posted(self, service_id: str, apprec_service_id: str | None, now: datetime) -> str | None:
        def work(db: Db) -> str | None:
            row = db.execute(
                "UPDATE edi2_messages SET apprec = 'posted', apprec_service_id = coalesce(?, apprec_service_id), "
                "updated_at = ? WHERE service_id = ? RETURNING message_id",
                (apprec_service_id, ts(now), service_id),
            ).fetchone()
            if row is None:
                return None
            message_id = int(row[0])
            db.execute(
                "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = ?, "
                "last_error = NULL, service_id = coalesce(?, service_id) "
                "WHERE message_id = ? AND kind = 'apprec' AND status = 'pending'",
                (ts(now), apprec_service_id, message_id),
            )
            return self._finish_if_delivered(db, message_id, now)

        return self._tx(work)

    def edi2_read(self, service_id: str, now: datetime) -> None:
        self._tx(lambda db: db.execute(
            "UPDATE edi2_messages SET read_at = ?, held = NULL, updated_at = ? WHERE service_id = ?",
            (ts(now), ts(now), service_id),
        ))  # fmt: skip

    def edi2_hold(self, service_id: str, reason: str, now: datetime) -> None:
        def work(db: Db) -> None:
            row = db.execute(
                "SELECT e.message_id, m.state, m.held_from FROM edi2_messages e JOIN messages m "
                "ON m.id = e.message_id WHERE e.service_id = ?",
                (service_id,),
            ).fetchone()
            if row is None:
                return
            message_id, state, held_from = row
            text = (f"the message service refused to act on service message {service_id}: {reason}; "
                    "`pfhjem-msg messages release` tries again")[:1000]  # fmt: skip
            db.execute("UPDATE edi2_messages SET held = ?, updated_at = ? WHERE service_id = ?",
                       (text, ts(now), service_id))  # fmt: skip
            db.execute(
                "UPDATE messages SET state = 'held', state_reason = ?, held_from = ?, updated_at = ? WHERE id = ?",
                (text, held_from if state == "held" else state, ts(now), message_id),
            )
            self._event(db, message_id, now, "daemon", state, "held", text)

        self._tx(work)

    # -- what we sent through the service --------------------------------------------------------

    def edi2_sent(self, delivery_id: int, service_id: str, now: datetime) -> None:
        self._tx(lambda db: db.execute("UPDATE deliveries SET service_id = ? WHERE id = ?",
                                       (service_id, delivery_id)))  # fmt: skip

    def edi2_awaiting_receipts(self, since: datetime, limit: int) -> list[tuple[DeliveryRow, str]]:
        rows = self._read(
            DELIVERY_SELECT.replace("SELECT ", "SELECT d.service_id, ", 1)
            + " WHERE d.service_id IS NOT NULL AND d.receipt_at IS NULL AND d.kind != 'apprec' "
            "AND d.status = 'delivered' AND d.delivered_at >= ? ORDER BY d.delivered_at LIMIT ?",
            (ts(since), limit),
        )
        return [(delivery_row(r), str(r["service_id"])) for r in rows]

    # -- health and operators ----------------------------------------------------------------

    def edi2_save_health(self, health: Edi2Health, now: datetime) -> None:
        h = health
        self._tx(lambda db: db.execute(
            "INSERT INTO edi2_health(id, last_success, failing_since, last_error, auth_failing, failures, "
            "updated_at) VALUES (1,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
            "last_success = coalesce(excluded.last_success, edi2_health.last_success), failing_since = excluded.failing_since, "
            "last_error = excluded.last_error, auth_failing = excluded.auth_failing, "
            "failures = excluded.failures, updated_at = excluded.updated_at",
            (ts(h.last_success) if h.last_success else None, ts(h.failing_since) if h.failing_since else None,
             h.last_error, int(h.auth_failing), h.failures, ts(now)),
        ), durable=False)  # fmt: skip

    def edi2_facts(self) -> Edi2IntakeFacts | None:
        rows = self._read("SELECT * FROM edi2_health WHERE id = 1")
        counts = self._read(
            "SELECT coalesce(SUM(CASE WHEN e.held IS NOT NULL AND m.state = 'held' THEN 1 ELSE 0 END), 0), "
            "coalesce(SUM(CASE WHEN e.read_at IS NULL AND (e.held IS NULL OR m.state != 'held') THEN 1 ELSE 0 END), 0) "
            "FROM edi2_messages e JOIN messages m ON m.id = e.message_id WHERE e.read_at IS NULL"
        )
        if not rows and not counts[0][1] and not counts[0][0]:
            return None
        h = rows[0] if rows else None
        return Edi2IntakeFacts(
            parse_ts(h["last_success"]) if h else None,
            parse_ts(h["failing_since"]) if h else None,
            h["last_error"] if h else None,
            bool(h["auth_failing"]) if h else False,
            int(h["failures"]) if h else 0,
            int(counts[0][0]),
            int(counts[0][1]),
        )

    def edi2_links(self, message_id: int) -> list[Edi2Link]:
        rows = self._read(
            "SELECT * FROM edi2_messages WHERE message_id = ? ORDER BY created_at, service_id", (message_id,)
        )
        return [Edi2Link(r["service_id"], r["receiver_her"], bool(r["is_apprec"]), r["apprec"],
                         r["apprec_service_id"], parse_ts(r["read_at"]), r["held"]) for r in rows]  # fmt: skip
