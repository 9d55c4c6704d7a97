"""``store copy``: an installation's history moved from its SQLite file into PostgreSQL.

Every table is copied row by row with its ids, in one PostgreSQL transaction, and the
identities are set past the largest id, so what the daemon adds later never collides. A row
already in the target with the same id and the same content is a row of an earlier copy and
is left alone: running the copy twice changes nothing. A row with the same id and different
content, or a row the file does not have, means the target is not a copy of this file (the
daemon ran on it, or it holds another installation): nothing is written, and the command says
which tables. Before it commits, the copy compares per-table counts and the set of stored
originals (their SHA-256) of the two stores; if they differ, nothing is kept.

The file is opened read-only, after the same checks the daemon makes (a link, a foreign or a
damaged file is refused).
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfhjem_msg.errors import StoreError
from pfhjem_msg.store.postgres import MIGRATION_LOCK, PostgresBackend
from pfhjem_msg.store.rows import marks
from pfhjem_msg.store.schema import MIGRATIONS
from pfhjem_msg.store.sql import Db
from pfhjem_msg.store.sqlite_file import check_header, check_ours

TABLES = (
    "raw", "messages", "deliveries", "events", "audit", "episodes", "followups", "refused",
    "edi2_messages", "edi2_health",
)  # fmt: skip
"""Every table, each after the tables its rows refer to."""
BATCH = 500


@dataclass
class TableCount:
    table: str
    source: int
    target: int
    copied: int


@dataclass
class CopyReport:
    tables: list[TableCount] = field(default_factory=list)
    originals_match: bool = False
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    """Per table: the keys (ids) of rows the target has differently, or that the file lacks."""

    @property
    def copied(self) -> int:
        return sum(t.copied for t in self.tables)

    @property
    def verified(self) -> bool:
        return not self.conflicts and self.originals_match and all(t.source == t.target for t in self.tables)


class CopyRefused(StoreError):
    """The target holds rows that are not this file's; the report says which."""

    def __init__(self, report: CopyReport, text: str) -> None:
        self.report = report
        super().__init__(text)


def open_source(path: Path) -> sqlite3.Connection:
    """The SQLite store at ``path``, read-only, checked like the daemon checks it, and at the
    schema this version writes into PostgreSQL."""
    if not path.exists():
        raise StoreError(
            f"there is no SQLite store at {path}: give the file with --from (state_dir/pfhjem-msg.sqlite3)"
        )
    check_header(path)
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        check_ours(db, path, deep=True)
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise StoreError(
            f"cannot read the store {path}: {exc}; stop the daemon that uses it and check its permissions"
        ) from exc
    if version != len(MIGRATIONS):
        db.close()
        raise StoreError(
            f"the store {path} is at schema {version}, not {len(MIGRATIONS)}: run this version's "
            f"`pfhjem-msg store migrate` on it (a configuration without [store] url and state_dir "
            f"{path.parent}), then copy again"
        )
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    unknown = sorted(tables - set(TABLES) - {"sqlite_sequence"})
    if unknown:
        db.close()
        raise StoreError(f"the store {path} has tables this version cannot copy ({', '.join(unknown)})")
    return db


def _columns(source: sqlite3.Connection, table: str, db: Db) -> tuple[list[str], str]:
    """The table's columns and key, as the file has them; the same names as the target's, or
    refused: the names are written into the statements on both sides, so a crafted file must
    not choose them."""
    info = source.execute(f"PRAGMA table_info({table})").fetchall()
    theirs = [str(r[1]) for r in info]
    ours = {r[0] for r in db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = ?", (table,)
    )}  # fmt: skip
    keys = [str(r[1]) for r in info if r[5] == 1]
    if set(theirs) != ours or len(keys) != 1:
        odd = sorted(set(theirs) ^ ours)[:5]
        raise StoreError(
            f"the file's table {table} does not have this version's columns (differing: "
            f"{', '.join(repr(name[:40]) for name in odd) or 'its key'}); nothing was copied: copy only a "
            "store this version made or migrated"
        )
    return theirs, keys[0]


def _originals(rows: list[Any]) -> str:
    digest = hashlib.sha256()
    for (sha,) in rows:
        digest.update(sha.encode() + b"\n")
    return digest.hexdigest()


def copy_into(path: Path, target: PostgresBackend) -> CopyReport:
    """Copy the SQLite store at ``path`` into ``target`` (migrated), verified; ``CopyRefused``
    (nothing written) when the target holds rows of its own."""
    source = open_source(path)
    try:
        source.execute("BEGIN")  # one snapshot of the file for the whole copy
        return target.run(lambda db: _copy(source, db))
    finally:
        source.close()


def _copy(source: sqlite3.Connection, db: Db) -> CopyReport:
    db.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))  # one copy or migration at a time
    report = CopyReport()
    for table in TABLES:
        columns, key = _columns(source, table, db)
        names = ", ".join(columns)
        copied = 0
        conflicts: list[str] = []
        cursor = source.execute(f"SELECT {names} FROM {table} ORDER BY {key}")
        while batch := cursor.fetchmany(BATCH // 10 if table == "raw" else BATCH):  # originals are large
            keys = [row[columns.index(key)] for row in batch]
            there = {
                r[key]: tuple(r)
                for r in db.execute(f"SELECT {names} FROM {table} WHERE {key} IN ({marks(keys)})", keys)
            }
            fresh = []
            for k, row in zip(keys, batch, strict=True):
                if k not in there:
                    fresh.append(row)
                elif there[k] != tuple(row):
                    conflicts.append(str(k))
            if fresh and not conflicts:
                db.executemany(f"INSERT INTO {table}({names}) VALUES ({marks(columns)})", fresh)
                copied += len(fresh)
        source_count = int(source.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        target_count = int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        if target_count > source_count and not conflicts:
            conflicts.append(f"{target_count - source_count} row(s) the file does not have")
        if conflicts:
            report.conflicts[table] = conflicts[:10]
        report.tables.append(TableCount(table, source_count, target_count, copied))
        if key == "id":
            db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false) FROM {table}"
            )
    theirs = _originals(source.execute("SELECT sha256 FROM raw ORDER BY sha256").fetchall())
    ours = _originals(list(db.execute("SELECT sha256 FROM raw ORDER BY sha256")))
    report.originals_match = theirs == ours
    if report.conflicts:
        which = "; ".join(f"{t}: {', '.join(keys)}" for t, keys in report.conflicts.items())
        raise CopyRefused(
            report,
            f"the target holds rows that are not this file's ({which}); nothing was copied. "
            "Copy into an empty database (drop and create it, then `pfhjem-msg store migrate`), "
            "or, if the daemon already runs on PostgreSQL, keep the SQLite file as an archive",
        )
    if not report.verified:
        raise CopyRefused(
            report,
            "the copy does not match the file (counts or stored originals differ); nothing was "
            "kept. Stop the daemon that writes the file, then copy again",
        )
    return report
