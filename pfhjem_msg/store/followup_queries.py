"""The follow-up plan in the store: episodes and their SP2/SP3 follow-ups, planned and closed in
the same transaction as the message that causes it, and reminders queued as deliveries of the
source message (so they are retried, seen and replayed like any delivery).

A marked message that ends the pathway closes the patient's open follow-ups; one that says the
patient has died cancels them and is recorded as an episode of kind ``death`` (an episode with
no follow-ups, removed with its message by retention like any episode). While it exists, no
plan is made for the patient and no reminder is queued about them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pfhjem_msg.errors import OperatorRefused
from pfhjem_msg.followups import SAME_EPISODE_DAYS, Followup, FollowupFacts, FollowupFilter, Phase
from pfhjem_msg.lifecycle import closing_status, nearest_followup, same_episode_range
from pfhjem_msg.store.base import DeliverySpec
from pfhjem_msg.store.core import StoreCore
from pfhjem_msg.store.delivery_columns import SLOT
from pfhjem_msg.store.rows import parse_ts, ts
from pfhjem_msg.store.sql import Db, Row

_SELECT = (
    "SELECT f.*, e.municipality, e.anchor, e.anchor_kind, e.source_message_id, e.patient_id, "
    "m.msg_id AS source_msg_id, m.received_at FROM followups f JOIN episodes e ON e.id = f.episode_id "
    "JOIN messages m ON m.id = e.source_message_id"
)


def _followup(r: Row) -> Followup:
    return Followup(
        r["id"], r["episode_id"], r["municipality"], r["point"], date.fromisoformat(r["window_start"]),
        date.fromisoformat(r["window_end"]), date.fromisoformat(r["anchor"]), r["anchor_kind"], r["status"],
        r["source_message_id"], r["source_msg_id"], datetime.fromisoformat(r["received_at"]),
        parse_ts(r["opened_reminder_at"]), parse_ts(r["closing_reminder_at"]), parse_ts(r["closed_at"]),
        r["closed_by"], r["note"],
    )  # fmt: skip


class FollowupQueries(StoreCore):
    # -- planned and closed while a message is processed -----------------------------------

    def _plan(self, db: Db, message_id: int, f: FollowupFacts, now: datetime) -> None:
        """Called from the message's own transaction (``apply``)."""
        if f.lifecycle in ("end", "death"):
            self._end_pathway(db, message_id, f, now)
        elif f.contact_point == 1 and f.windows and f.anchor is not None and f.anchor_kind:
            self._start_episode(db, message_id, f, now)
        elif f.contact_point in (2, 3) and f.patient_id:
            self._close_by_message(db, message_id, f, now)

    @staticmethod
    def _death_of(db: Db, patient_id: str | None) -> int | None:
        """The message that told us the patient has died, if any (an operator who discards that
        message, because it was wrong, lifts it)."""
        if not patient_id:
            return None
        row = db.execute(
            "SELECT e.source_message_id FROM episodes e JOIN messages m ON m.id = e.source_message_id "
            "WHERE e.patient_id = ? AND e.anchor_kind = 'death' AND m.state != 'discarded' LIMIT 1",
            (patient_id,),
        ).fetchone()
        return int(row[0]) if row else None

    def _end_pathway(self, db: Db, message_id: int, f: FollowupFacts, now: datetime) -> None:
        """The pathway ends, or the patient has died: the patient's open follow-ups close with
        this message as the reason, and their pending reminders are cancelled."""
        death = f.lifecycle == "death"
        if not f.patient_id:
            self._event(db, message_id, now, "daemon", None, None,
                        f"{'death' if death else 'end of the pathway'} without a national id: "
                        "no follow-up can be matched; an operator must close them")  # fmt: skip
            return
        if (
            death
            and db.execute("SELECT 1 FROM episodes WHERE source_message_id = ?", (message_id,)).fetchone()
        ):
            return  # processed before (a replay)
        rows = db.execute(
            "SELECT f.id, f.point, e.source_message_id FROM followups f JOIN episodes e ON e.id = f.episode_id "
            "WHERE e.patient_id = ? AND f.status = 'open' ORDER BY f.id",
            (f.patient_id,),
        ).fetchall()
        closed = []
        for fid, point, source in rows:
            status = closing_status(death, point, f.contact_point)
            note = (
                f"the patient has died (message {message_id})"
                if death
                else f"the pathway ended (message {message_id})"
            )
            db.execute("UPDATE followups SET status=?, closed_at=?, closed_by=?, note=? WHERE id=?",
                       (status, ts(now), f"message {message_id}", note, fid))  # fmt: skip
            db.execute(
                "UPDATE deliveries SET status='cancelled', last_error=? WHERE message_id=? AND kind='reminder' "
                "AND followup_id=? AND status IN ('pending', 'failed')",
                (f"follow-up {status}: {note}", source, fid),
            )
            self._event(db, source, now, "daemon", None, None, f"follow-up {fid} {status}: {note}")
            closed.append(f"{fid} ({status})")
        if death:
            db.execute(
                "INSERT INTO episodes(patient_id, municipality, anchor, anchor_kind, source_message_id, created_at) "
                "VALUES (?,?,?,'death',?,?)",
                (f.patient_id, f.municipality, now.date().isoformat(), message_id, ts(now)),
            )
        what = "the patient has died" if death else "the pathway ends"
        self._event(db, message_id, now, "daemon", None, None,
                    f"{what}: closes follow-up(s) {', '.join(closed) if closed else 'none open'}")  # fmt: skip

    def _start_episode(self, db: Db, message_id: int, f: FollowupFacts, now: datetime) -> None:
        assert f.anchor is not None and f.anchor_kind is not None
        if db.execute("SELECT 1 FROM episodes WHERE source_message_id = ?", (message_id,)).fetchone():
            return  # processed before (a replay): the plan exists
        dead = self._death_of(db, f.patient_id)
        if dead is not None:
            self._event(db, message_id, now, "daemon", None, None,
                        f"no follow-up plan: message {dead} said the patient has died")  # fmt: skip
            return
        if f.patient_id:
            low, high = same_episode_range(f.anchor, SAME_EPISODE_DAYS)
            same = db.execute(
                "SELECT id, source_message_id FROM episodes WHERE patient_id = ? AND anchor_kind != 'death' "
                "AND anchor BETWEEN ? AND ?",
                (f.patient_id, low.isoformat(), high.isoformat()),
            ).fetchone()
            if same is not None:
                self._event(db, message_id, now, "daemon", None, None,
                            f"same episode as the follow-up plan from message {same[1]}: no second plan")  # fmt: skip
                return
        episode = db.insert(
            "INSERT INTO episodes(patient_id, municipality, anchor, anchor_kind, source_message_id, created_at) "
            "VALUES (?,?,?,?,?,?)",
            (f.patient_id, f.municipality, f.anchor.isoformat(), f.anchor_kind, message_id, ts(now)),
        )
        made = []
        for point, start, end in f.windows:
            fid = db.insert(
                "INSERT INTO followups(episode_id, point, window_start, window_end) VALUES (?,?,?,?)",
                (episode, point, start.isoformat(), end.isoformat()),
            )
            made.append(f"SP{point} {start.isoformat()}..{end.isoformat()} (follow-up {fid})")
        self._event(db, message_id, now, "daemon", None, None,
                    f"follow-up plan ({f.anchor_kind} {f.anchor.isoformat()}): {'; '.join(made)}")  # fmt: skip

    def _close_by_message(self, db: Db, message_id: int, f: FollowupFacts, now: datetime) -> None:
        open_ones = db.execute(
            "SELECT f.id, f.window_start FROM followups f JOIN episodes e ON e.id = f.episode_id "
            "WHERE e.patient_id = ? AND f.point = ? AND f.status = 'open'",
            (f.patient_id, f.contact_point),
        ).fetchall()
        chosen = nearest_followup([(r[0], date.fromisoformat(r[1])) for r in open_ones], now.date())
        if chosen is None:
            return
        row = (chosen,)
        db.execute(
            "UPDATE followups SET status='done', closed_at=?, closed_by=?, note=? WHERE id=?",
            (
                ts(now),
                f"message {message_id}",
                f"a message marked samhandlingspunkt {f.contact_point}",
                row[0],
            ),
        )
        self._event(db, message_id, now, "daemon", None, None,
                    f"closes follow-up {row[0]} (samhandlingspunkt {f.contact_point})")  # fmt: skip

    # -- reading ----------------------------------------------------------------------------

    def followups(self, f: FollowupFilter, today: date) -> list[Followup]:
        where: list[str] = []
        args: list[Any] = []
        if not f.include_closed:
            where.append("f.status = 'open'")
        if f.municipality:
            where.append("e.municipality = ?")
            args.append(f.municipality)
        conditions = []
        if f.due:
            conditions.append("(f.window_start <= ? AND f.window_end >= ?)")
            args += [today.isoformat(), today.isoformat()]
        if f.overdue:
            conditions.append("f.window_end < ?")
            args.append(today.isoformat())
        if conditions:
            where.append("f.status = 'open' AND (" + " OR ".join(conditions) + ")")
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY f.window_start, f.id"
        return [_followup(r) for r in self._read(sql, args)]

    def followup(self, followup_id: int) -> Followup | None:
        rows = self._read(_SELECT + " WHERE f.id = ?", (followup_id,))
        return _followup(rows[0]) if rows else None

    def followups_for_message(self, message_id: int) -> list[Followup]:
        return [_followup(r) for r in self._read(_SELECT + " WHERE e.source_message_id = ? ORDER BY f.point",
                                                 (message_id,))]  # fmt: skip

    def open_followups(self, until: date) -> list[Followup]:
        rows = self._read(_SELECT + " WHERE f.status = 'open' AND f.window_start <= ? ORDER BY f.id",
                          (until.isoformat(),))  # fmt: skip
        return [_followup(r) for r in rows]

    def followup_counts(self, today: date) -> dict[str, dict[str, int]]:
        rows = self._read(
            "SELECT e.municipality, "
            "SUM(CASE WHEN f.window_start > ? THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN f.window_start <= ? AND f.window_end >= ? THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN f.window_end < ? THEN 1 ELSE 0 END) "
            "FROM followups f JOIN episodes e ON e.id = f.episode_id WHERE f.status = 'open' "
            "GROUP BY e.municipality",
            (today.isoformat(),) * 4,
        )
        return {r[0]: {"open": r[1], "due": r[2], "overdue": r[3]} for r in rows}

    # -- changing ---------------------------------------------------------------------------

    def add_reminder(self, followup_id: int, phase: Phase, spec: DeliverySpec, now: datetime) -> bool:
        if spec.slot != ("reminder", followup_id, phase):
            raise ValueError(f"reminder {followup_id} {phase} given a delivery for {spec.slot}")

        def work(db: Db) -> bool:
            row = db.execute(
                "SELECT f.status, f.opened_reminder_at, f.closing_reminder_at, e.source_message_id, e.patient_id "
                "FROM followups f JOIN episodes e ON e.id = f.episode_id WHERE f.id = ?",
                (followup_id,),
            ).fetchone()
            if row is None or row[0] != "open":
                return False
            dead = self._death_of(db, row[4])
            if dead is not None:  # never a reminder about a patient we were told has died
                note = f"the patient has died (message {dead})"
                db.execute("UPDATE followups SET status='cancelled', closed_at=?, closed_by=?, note=? WHERE id=?",
                           (ts(now), f"message {dead}", note, followup_id))  # fmt: skip
                self._event(
                    db, row[3], now, "daemon", None, None, f"follow-up {followup_id} cancelled: {note}"
                )
                return False
            if (phase == "open" and row[1]) or (phase != "open" and row[2]):
                return False
            inserted = db.execute(
                "INSERT INTO deliveries(message_id, kind, followup_id, phase, transport, target, filename, payload, "
                f"her_id, out_msg_id, next_attempt_at, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                f"ON CONFLICT({SLOT}) DO NOTHING",
                (row[3], "reminder", followup_id, phase, spec.transport, spec.target, spec.filename, spec.payload,
                 spec.her_id, spec.out_msg_id, ts(now), ts(now)),
            ).rowcount  # fmt: skip
            column = "opened_reminder_at" if phase == "open" else "closing_reminder_at"
            db.execute(f"UPDATE followups SET {column} = ? WHERE id = ?", (ts(now), followup_id))
            if phase != "open":  # a later reminder says it all: no opening one after it
                db.execute("UPDATE followups SET opened_reminder_at = coalesce(opened_reminder_at, ?) WHERE id = ?",
                           (ts(now), followup_id))  # fmt: skip
            if inserted:
                self._event(db, row[3], now, "daemon", None, None,
                            f"follow-up {followup_id}: {phase} reminder queued to {spec.destination}")  # fmt: skip
            return bool(inserted)

        return self._tx(work)

    def close_followup(self, followup_id: int, status: str, actor: str, note: str, now: datetime,
                       whole_episode: bool = False) -> list[int]:  # fmt: skip
        def work(db: Db) -> list[int]:
            row = db.execute(
                "SELECT f.status, e.source_message_id, f.point FROM followups f "
                "JOIN episodes e ON e.id = f.episode_id WHERE f.id = ?",
                (followup_id,),
            ).fetchone()
            if row is None:
                raise OperatorRefused(
                    f"there is no follow-up {followup_id}: list them with `pfhjem-msg followups list`"
                )
            if row[0] != "open":
                raise OperatorRefused(f"follow-up {followup_id} is already {row[0]}")
            ids = [followup_id]
            if whole_episode:
                ids = [r[0] for r in db.execute(
                    "SELECT id FROM followups WHERE status = 'open' AND episode_id = "
                    "(SELECT episode_id FROM followups WHERE id = ?) ORDER BY id",
                    (followup_id,),
                )]  # fmt: skip
            for fid in ids:
                db.execute("UPDATE followups SET status=?, closed_at=?, closed_by=?, note=? WHERE id=?",
                           (status, ts(now), actor, note, fid))  # fmt: skip
                db.execute(
                    "UPDATE deliveries SET status='cancelled', last_error=? WHERE message_id=? AND kind='reminder' "
                    "AND followup_id=? AND status IN ('pending', 'failed')",
                    (f"follow-up {status} by {actor}", row[1], fid),
                )
                self._event(db, row[1], now, actor, None, None, f"follow-up {fid} {status}: {note}")
                self._audit(db, actor, f"follow-up {fid} {status}", row[1], note, now)
            return ids

        return self._tx(work)
