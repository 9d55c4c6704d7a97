"""Deliveries in typed columns: the migration step that moves an existing store from the
strings (``followup:<id>:<phase>`` in ``kind``, ``dir:/path``, ``smtp:x@y``, ``edi2:apprec`` in
``destination``) to the columns kind, follow-up id, phase, transport and target, and the key a
delivery is unique by.

This is the one place that still reads the old strings, once, while it migrates them.
"""

from __future__ import annotations

from pfhjem_msg.errors import StoreError
from pfhjem_msg.followups import Phase
from pfhjem_msg.lifecycle import DELIVERY_KINDS
from pfhjem_msg.store.sql import Db

SLOT = "message_id, kind, COALESCE(followup_id, 0), COALESCE(phase, '')"
"""What a message has at most one delivery of (``DeliverySpec.slot``): the unique index, and
the conflict target of every insert of a delivery. A reminder per follow-up and phase; one of
each other kind."""

PHASES: tuple[Phase, ...] = ("open", "closing", "overdue")
_OLD_TRANSPORTS = (  # no LIKE: a literal % means a placeholder to some drivers
    ("transport = destination", "destination IN ('hub', 'edi2')"),
    ("transport = 'edi2_apprec'", "destination = 'edi2:apprec'"),
    ("transport = 'dir', target = substr(destination, 5)", "substr(destination, 1, 4) = 'dir:'"),
    ("transport = 'smtp', target = substr(destination, 6)", "substr(destination, 1, 5) = 'smtp:'"),
)


def typed_deliveries(db: Db) -> None:
    """Add the columns, fill them from the old strings, and key deliveries by ``SLOT``. A
    string this version does not know stops the migration (nothing is changed), naming the
    delivery: guessing would send it somewhere else."""
    from pfhjem_msg.store.schema import ddl  # the schema's steps include this one

    for column in ("transport TEXT", "target TEXT", "followup_id INTEGER", "phase TEXT"):
        for statement in ddl(f"ALTER TABLE deliveries ADD COLUMN {column}", db.dialect.name):
            db.execute(statement)  # typed as every other column (on PostgreSQL: TEXT COLLATE "C")
    for assign, where in _OLD_TRANSPORTS:
        db.execute(f"UPDATE deliveries SET {assign} WHERE {where}")
    _refuse_unknown(db, "destination", "transport IS NULL")
    _drop_old_key(db)
    updates = []
    for delivery_id, kind in db.execute(
        "SELECT id, kind FROM deliveries WHERE substr(kind, 1, 9) = 'followup:'"
    ).fetchall():
        _, followup_id, phase = [*str(kind).split(":"), "", ""][:3]
        if followup_id.isdigit() and phase in PHASES:
            updates.append(("reminder", int(followup_id), phase, delivery_id))
    db.executemany("UPDATE deliveries SET kind = ?, followup_id = ?, phase = ? WHERE id = ?", updates)
    known = ",".join(f"'{k}'" for k in DELIVERY_KINDS)
    _refuse_unknown(db, "kind", f"kind NOT IN ({known})")
    db.execute(f"CREATE UNIQUE INDEX deliveries_slot ON deliveries({SLOT})")


def _refuse_unknown(db: Db, column: str, where: str) -> None:
    rows = db.execute(f"SELECT id, message_id FROM deliveries WHERE {where} ORDER BY id LIMIT 5").fetchall()
    if rows:
        which = ", ".join(f"delivery {r[0]} of message {r[1]}" for r in rows)
        raise StoreError(
            f"the store cannot be upgraded: {which} has a {column} this version does not know; "
            "nothing was changed. Run the earlier version, or ask for help with these deliveries"
        )


def _drop_old_key(db: Db) -> None:
    """Deliveries were unique by (message, kind) and named their destination as a string. A
    PostgreSQL table drops both in place; SQLite cannot drop a table's constraint, so the
    table is made again without them (from its own definition, so columns other migrations
    added stay), its rows and indexes copied over."""
    if db.dialect.name == "postgresql":
        db.execute("ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_message_id_kind_key")
        db.execute("ALTER TABLE deliveries DROP COLUMN destination")
        return
    table = db.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'deliveries'"
    ).fetchone()[0]
    indexes = [
        r[0]
        for r in db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries' AND sql IS NOT NULL"
        ).fetchall()
    ]
    columns = [r[1] for r in db.execute("PRAGMA table_info(deliveries)").fetchall() if r[1] != "destination"]
    new = _without(_without(str(table), "UNIQUE (message_id, kind)"), "destination TEXT NOT NULL")
    db.execute(new.replace("CREATE TABLE deliveries", "CREATE TABLE deliveries_typed", 1))
    names = ", ".join(columns)
    db.execute(f"INSERT INTO deliveries_typed ({names}) SELECT {names} FROM deliveries")
    db.execute("DROP TABLE deliveries")
    db.execute("ALTER TABLE deliveries_typed RENAME TO deliveries")
    for sql in indexes:
        db.execute(sql)


def _without(definition: str, part: str) -> str:
    """``definition`` with one comma-separated ``part`` of its column list taken out."""
    start, end = definition.index("(") + 1, definition.rindex(")")
    parts, depth, current = [], 0, ""
    for ch in definition[start:end]:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    kept = [p for p in parts if " ".join(p.split()) != part]
    if len(kept) == len(parts):
        raise StoreError(f"the store cannot be upgraded: its deliveries table has no {part}")
    return definition[:start] + ",".join(kept) + definition[end:]
