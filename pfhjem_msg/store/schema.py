"""The schema, one list of migrations for both backends.

A step is portable DDL (run statement by statement, with the few type names that differ
translated for PostgreSQL by ``ddl``), or a Python function run through the connection
interface, for a backfill that needs parsing. A backend keeps the number of steps applied
(``PRAGMA user_version`` in the SQLite file, the ``pfhjem_meta`` table in PostgreSQL) and runs
what is missing in one transaction, so a store is always at one version.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeAlias

from pfhjem_msg.store.delivery_columns import typed_deliveries
from pfhjem_msg.store.sql import Db

Step: TypeAlias = "str | Callable[[Db], None]"

MIGRATIONS: list[Step] = [
    # 1: the first schema
    """
    CREATE TABLE raw (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        bytes BLOB
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        raw_id INTEGER NOT NULL REFERENCES raw(id),
        received_at TEXT NOT NULL,
        source TEXT NOT NULL,
        state TEXT NOT NULL,
        state_reason TEXT,
        on_delivered TEXT NOT NULL DEFAULT 'done',
        msg_id TEXT,
        msg_type TEXT,
        sender_her TEXT,
        receiver_her TEXT,
        marked INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX messages_due ON messages(state, next_attempt_at);
    CREATE INDEX messages_msgid ON messages(msg_id, sender_her);
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id),
        kind TEXT NOT NULL,
        destination TEXT NOT NULL,
        filename TEXT NOT NULL,
        payload BLOB NOT NULL,
        her_id TEXT,
        out_msg_id TEXT,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT,
        last_error TEXT,
        delivered_at TEXT,
        receipt_status TEXT,
        receipt_errors TEXT,
        receipt_at TEXT,
        UNIQUE (message_id, kind)
    );
    CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at);
    CREATE INDEX deliveries_out ON deliveries(out_msg_id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id),
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT,
        reason TEXT NOT NULL
    );
    CREATE INDEX events_message ON events(message_id, id);
    """,
    # 2: GP copies whose AppRec is overdue are flagged once, for an operator
    """
    ALTER TABLE deliveries ADD COLUMN receipt_overdue_at TEXT;
    """,
    # 3: operator tooling: hold/release, replays and their lineage, retention, audit, fast listings
    """
    ALTER TABLE messages ADD COLUMN held_from TEXT;
    ALTER TABLE messages ADD COLUMN redraft INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN replay_of INTEGER REFERENCES messages(id);
    ALTER TABLE messages ADD COLUMN pruned_at TEXT;
    ALTER TABLE deliveries ADD COLUMN created_at TEXT;
    CREATE INDEX messages_state_received ON messages(state, received_at);
    CREATE INDEX messages_received ON messages(received_at);
    CREATE INDEX messages_sender ON messages(sender_her, received_at);
    CREATE INDEX messages_receiver ON messages(receiver_her, received_at);
    CREATE INDEX messages_replay_of ON messages(replay_of);
    CREATE INDEX messages_raw ON messages(raw_id);
    CREATE INDEX deliveries_message ON deliveries(message_id, kind);
    CREATE INDEX deliveries_awaiting_receipt ON deliveries(delivered_at)
        WHERE kind = 'gp_copy' AND status = 'delivered' AND receipt_at IS NULL;
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        message_id INTEGER,
        detail TEXT NOT NULL
    );
    CREATE INDEX audit_at ON audit(at);
    """,
    # 4: the follow-up plan: episodes (one per SP1 message that starts one) and their SP2/SP3
    """
    CREATE TABLE episodes (
        id INTEGER PRIMARY KEY,
        patient_id TEXT,
        municipality TEXT NOT NULL,
        anchor TEXT NOT NULL,
        anchor_kind TEXT NOT NULL,
        source_message_id INTEGER NOT NULL UNIQUE REFERENCES messages(id),
        created_at TEXT NOT NULL
    );
    CREATE INDEX episodes_patient ON episodes(patient_id, anchor);
    CREATE TABLE followups (
        id INTEGER PRIMARY KEY,
        episode_id INTEGER NOT NULL REFERENCES episodes(id),
        point INTEGER NOT NULL,
        window_start TEXT NOT NULL,
        window_end TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'open',
        opened_reminder_at TEXT,
        closing_reminder_at TEXT,
        closed_at TEXT,
        closed_by TEXT,
        note TEXT,
        UNIQUE (episode_id, point)
    );
    CREATE INDEX followups_status ON followups(status, window_start);
    """,
    # 5: a case-unit copy is the stored original: kept once, not copied into the delivery
    """
    ALTER TABLE deliveries ADD COLUMN original INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: files the spool refused (not a regular file, too large, unreadable): never their content
    """
    CREATE TABLE refused (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        source TEXT NOT NULL,
        name TEXT NOT NULL,
        reason TEXT NOT NULL,
        size INTEGER,
        acknowledged_at TEXT,
        acknowledged_by TEXT
    );
    CREATE INDEX refused_open ON refused(acknowledged_at, id);
    """,
    # 7: EDI 2.0: the service's messages linked to ours (exactly-once intake), the service's id
    # of what we sent through it, and whether intake from it works (for `status`)
    """
    CREATE TABLE edi2_messages (
        service_id TEXT PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id),
        receiver_her INTEGER NOT NULL,
        is_apprec INTEGER NOT NULL,
        answers INTEGER NOT NULL,
        apprec TEXT NOT NULL DEFAULT 'none',
        apprec_service_id TEXT,
        read_at TEXT,
        held TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX edi2_messages_message ON edi2_messages(message_id);
    CREATE INDEX edi2_messages_unsettled ON edi2_messages(created_at) WHERE read_at IS NULL;
    ALTER TABLE deliveries ADD COLUMN service_id TEXT;
    CREATE INDEX deliveries_awaiting_service_receipt ON deliveries(delivered_at)
        WHERE service_id IS NOT NULL AND receipt_at IS NULL AND kind != 'apprec';
    CREATE TABLE edi2_health (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_success TEXT,
        failing_since TEXT,
        last_error TEXT,
        auth_failing INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL
    );
    """,
    # 8: deliveries in typed columns (kind, follow-up id and phase, transport, target) instead
    # of strings, unique per message by kind, follow-up and phase
    typed_deliveries,
]


def ddl(script: str, dialect: str) -> list[str]:
    """The statements of a DDL step as ``dialect`` writes them. SQLite's rowid alias becomes an
    identity column (``BY DEFAULT``: ``store copy`` keeps the ids), every integer a 64-bit one
    (ids, counts and flags alike: one integer type, as in SQLite), BLOB bytea, and text compares
    byte by byte as in SQLite (the "C" collation), whatever the database's locale: times are
    stored as ISO-8601 text and compared as text."""
    statements = [s.strip() for s in script.split(";") if s.strip()]
    if dialect != "postgresql":
        return statements
    out = []
    for s in statements:
        s = re.sub(r"\bINTEGER PRIMARY KEY\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", s)
        s = re.sub(r"\bINTEGER\b", "BIGINT", s)
        s = re.sub(r"\bBLOB\b", "BYTEA", s)
        s = re.sub(r"\bTEXT\b", 'TEXT COLLATE "C"', s)
        out.append(s)
    return out


def apply(db: Db, version: int) -> int:
    """Run the steps after ``version`` (in the caller's transaction); the version reached."""
    for step in MIGRATIONS[version:]:
        if isinstance(step, str):
            for statement in ddl(step, db.dialect.name):
                db.execute(statement)
        else:
            step(db)
    return len(MIGRATIONS)
