"""The SQLite plumbing under the store: the connection (WAL; ``synchronous=FULL`` for the
commits that must be on disk when they return: intake and deliveries), transactions,
migrations, events. The daemon and the operator commands may use the same file at once.

The store holds patient data and is the only record of what is due, so it is private and is
never silently replaced. A new store is made only where there is none: complete under a
temporary name (0600 whatever the umask; SQLite gives its ``-wal``/``-shm`` files the same
mode), then linked into place, so a crash never leaves a half-made one. An existing file that
is empty, not SQLite, another program's database (``PRAGMA application_id``) or damaged
(``PRAGMA quick_check``, at the daemon's start) is refused with what to do, never replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from pfhjem_msg.errors import NoSuchMessage, StoreError
from pfhjem_msg.logs import get_logger
from pfhjem_msg.store.base import Accepted, DeliveryRow, MessageRow

T = TypeVar("T")
log = get_logger("pfhjem_msg.store")

APPLICATION_ID = 0x70666A6D
"""``PRAGMA application_id`` of our stores ("pfjm"): tells ours from any other SQLite file."""
SQLITE_MAGIC = b"SQLite format 3\x00"
CORE_TABLES = frozenset({"raw", "messages", "deliveries", "events"})
"""What a store made before the application id existed has (adopted, and then marked)."""

MIGRATIONS: list[str] = [
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
]


@lru_cache(maxsize=64)
def ts(moment: datetime) -> str:
    """The stored form of a time. Cached: one batch writes the same moment many times."""
    return moment.isoformat(timespec="microseconds")


def parse_ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def message_row(r: sqlite3.Row) -> MessageRow:
    return MessageRow(
        r["id"], r["state"], r["state_reason"], datetime.fromisoformat(r["received_at"]), r["source"],
        r["msg_id"], r["msg_type"], r["sender_her"], r["receiver_her"],
        None if r["marked"] is None else bool(r["marked"]), r["attempts"], r["replay_of"],
        r["pruned_at"] is not None,
    )  # fmt: skip


DELIVERY_SELECT = (
    "SELECT d.id, d.message_id, d.kind, d.destination, d.filename, d.her_id, d.out_msg_id, d.status, "
    "d.attempts, d.last_error, CASE WHEN d.original = 1 THEN coalesce(r.bytes, x'') ELSE d.payload END AS payload "
    "FROM deliveries d JOIN messages m ON m.id = d.message_id JOIN raw r ON r.id = m.raw_id"
)
"""Deliveries with their payload: the stored original for a case-unit copy."""


def delivery_row(r: sqlite3.Row) -> DeliveryRow:
    return DeliveryRow(
        r["id"], r["message_id"], r["kind"], r["destination"], r["filename"], bytes(r["payload"]),
        r["her_id"], r["out_msg_id"], r["status"], r["attempts"], r["last_error"],
    )  # fmt: skip


def marks(values: Sequence[object]) -> str:
    """The ``?,?,?`` of an ``IN (...)`` for these values."""
    return ",".join("?" * len(values))


def chunks(ids: Sequence[int], size: int = 500) -> list[Sequence[int]]:
    """Ids in slices small enough for one statement's parameters: one statement per slice
    instead of one per row."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _explain(path: Path, exc: sqlite3.Error) -> str:
    if "locked" in str(exc) or "busy" in str(exc):
        return f"the store {path} is locked by another process for too long; try again in a moment"
    return f"the store {path} failed: {exc}"


def private_dir(directory: Path) -> None:
    """Create ``directory`` 0700 whatever the umask (its parents as the umask says)."""
    if not directory.exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        os.chmod(directory, 0o700)


def warn_if_readable(paths: Sequence[Path]) -> None:
    """A warning per existing state directory or store file that others may read: made
    before this version, by hand, or by a service run outside its unit."""
    for path in paths:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & 0o077:
            want = "700" if stat.S_ISDIR(mode) else "600"
            log.warning("store.not_private", path=str(path), mode=oct(mode & 0o777),
                        fix=f"chmod {want} {path}")  # fmt: skip


def migrate(db: sqlite3.Connection) -> None:
    """Bring the schema up to date (in the caller's transaction)."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version={number}")
    if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
        db.execute(f"PRAGMA application_id={APPLICATION_ID}")


def _damaged(path: Path, what: str) -> StoreError:
    return StoreError(
        f"the store {path} is damaged ({what}) and was left as it is: restore it from a backup "
        f"(with its -wal file), or move it aside (mv {path} {path}.damaged) to start with an "
        "empty store, which loses its history and pending deliveries"
    )


def _foreign(path: Path, what: str) -> StoreError:
    return StoreError(
        f"the file {path} is not a pfhjem-msg store ({what}) and was left as it is: check "
        "state_dir in the configuration, or move the file aside if it does not belong there"
    )


def create_store(path: Path) -> None:
    """A new, empty, private store at ``path``, made complete aside and linked into place;
    nothing happens if another process made one meanwhile."""
    private_dir(path.parent)
    temp = path.with_name(f".{path.name}.new-{os.getpid()}")
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{temp}{suffix}")
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        db = sqlite3.connect(str(temp), isolation_level=None)
        try:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # so pruning gives disk back
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")
            migrate(db)
            db.execute("COMMIT")
        finally:
            db.close()
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)
        created = True
    except FileExistsError:
        created = False
    finally:
        os.unlink(temp)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    if created:
        log.warning("store.created", path=str(path), note="there was no store: a new, empty one was made")


def check_header(path: Path) -> None:
    """Refuse what is at ``path`` unless it looks like a SQLite file (before SQLite opens it:
    SQLite would take an empty file for a new database), and refuse what somebody else could
    have put there (``check_planted``)."""
    check_planted(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(
                f"cannot open the store {path}: it is not a regular file; check state_dir, or move it aside"
            )
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(
            f"cannot open the store {path}: {exc.strerror}; check the path and its permissions"
        ) from exc
    if st.st_size == 0:
        raise _damaged(path, "it is empty, 0 bytes")
    if head != SQLITE_MAGIC:
        raise _foreign(path, "it is not a SQLite database")


def check_planted(path: Path) -> None:
    """The store, its ``-wal`` and its ``-shm`` must be files of the state directory's owner, not
    links, in a directory nobody else may write to. A link in place of the store opens another
    store; a ``-wal`` file SQLite finds is replayed into the store, so whoever could plant one
    could write rows of their choosing. The owner is compared with the directory's, not with
    this process's, so an operator command run as root still opens the daemon's store."""
    try:
        directory = os.stat(path.parent)
    except OSError as exc:
        raise StoreError(
            f"cannot open the store {path}: {exc.strerror}; check state_dir and its permissions"
        ) from exc
    if directory.st_mode & 0o022:
        raise StoreError(
            f"cannot open the store {path}: its directory may be written by others "
            f"(mode {oct(directory.st_mode & 0o777)}); make it writable by the service user alone "
            "(chmod 0700) and check what is in it"
        )
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(
                f"cannot open the store {path}: {candidate.name}: {exc.strerror}; check its permissions"
            ) from exc
        if stat.S_ISLNK(st.st_mode):
            raise StoreError(
                f"cannot open the store {path}: {candidate.name} is a link; the store's files must be "
                "regular files in state_dir: find out who made it, then move it aside"
            )
        if st.st_uid != directory.st_uid:
            raise StoreError(
                f"cannot open the store {path}: {candidate.name} belongs to user {st.st_uid}, not to "
                f"the state directory's owner {directory.st_uid}; find out who made it, then move it aside"
            )


def check_ours(db: sqlite3.Connection, path: Path, deep: bool) -> None:
    """Refuse another program's database, one from a newer version, or (``deep``) a damaged one."""
    try:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        problems = [r[0] for r in db.execute("PRAGMA quick_check(5)")] if deep else ["ok"]
    except sqlite3.OperationalError:
        raise  # locked, or cannot be read: the caller says so
    except sqlite3.DatabaseError as exc:
        raise _damaged(path, str(exc)) from exc
    if app_id != APPLICATION_ID and not (app_id == 0 and version >= 1 and tables >= CORE_TABLES):
        raise _foreign(path, f"application id {app_id}, tables: {', '.join(sorted(tables)[:5]) or 'none'}")
    if version > len(MIGRATIONS):
        raise StoreError(
            f"the store {path} was made by a newer pfhjem-msg (schema {version}, this one knows "
            f"{len(MIGRATIONS)}): run the newer version, or restore the store from a backup"
        )
    if problems != ["ok"]:
        raise _damaged(path, f"integrity check: {'; '.join(problems)[:300]}")


class SqliteBase:
    def __init__(self, path: Path, busy_timeout_ms: int = 10_000, create: bool = True) -> None:
        """``create``: the daemon's opening: make the store if there is none, check it
        thoroughly, warn when it is readable by others. Operator commands pass False."""
        self.path = path
        if not os.path.lexists(path):
            if not create:
                raise StoreError(
                    f"there is no store at {path}: check state_dir in the configuration, or start the daemon once"
                )
            try:
                create_store(path)
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(
                    f"cannot create the store {path}: {exc}; check the path and its permissions"
                ) from exc
        check_header(path)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                       timeout=busy_timeout_ms / 1000)  # fmt: skip
            self._db.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            check_ours(self._db, path, deep=create)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA wal_autocheckpoint=4000")  # 16 MB between checkpoints
            self._db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(_explain(path, exc)) from exc
            raise StoreError(
                f"cannot open the store {path}: {exc}; check the path and its permissions"
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise _damaged(path, str(exc)) from exc
        except OSError as exc:
            raise StoreError(
                f"cannot open the store {path}: {exc}; check the path and its permissions"
            ) from exc
        if create:
            warn_if_readable([path.parent, path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))])
        self._lock = threading.RLock()
        self._durable = True
        self._migrate()

    # -- plumbing --------------------------------------------------------------------------

    def _tx(self, work: Callable[[sqlite3.Connection], T], durable: bool = True) -> T:
        """Run ``work`` in one IMMEDIATE transaction, committed on return. ``durable``: on disk
        (fsync) before it returns, as intake and deliveries need. Processing steps pass False:
        they survive a crash of the process (WAL), and after a power loss the last of them are
        simply done again from the stored original, which is safe because they are derived."""
        with self._lock:
            try:
                if durable != self._durable:
                    self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                    self._durable = durable
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise StoreError(_explain(self.path, exc)) from exc

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                cur = self._db.execute(sql, args)
                cur.row_factory = sqlite3.Row
                return cur.fetchall()
            except sqlite3.Error as exc:
                raise StoreError(_explain(self.path, exc)) from exc

    def _migrate(self) -> None:
        self._tx(migrate)

    def _exists(self, db: sqlite3.Connection, message_id: int) -> str:
        """The message's state; ``NoSuchMessage`` when there is no such message."""
        row = db.execute("SELECT state FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise NoSuchMessage(message_id)
        return str(row[0])

    @classmethod
    def _store_raw(cls, db: sqlite3.Connection, raw: bytes, source: str, now: datetime) -> Accepted:
        """Keep the bytes as a new message, or name the message that already has the same bytes
        (a hub's retry, the same message by two routes): one message per content."""
        digest = hashlib.sha256(raw).hexdigest()
        row = db.execute(
            "SELECT m.id FROM raw r JOIN messages m ON m.raw_id = r.id WHERE r.sha256 = ? ORDER BY m.id LIMIT 1",
            (digest,),
        ).fetchone()
        if row is not None:
            return Accepted(int(row[0]), False)
        raw_id = db.execute(
            "INSERT INTO raw(sha256, size, bytes) VALUES (?,?,?)", (digest, len(raw), raw)
        ).lastrowid
        message_id = db.execute(
            "INSERT INTO messages(raw_id, received_at, source, state, next_attempt_at, updated_at) "
            "VALUES (?,?,?,?,?,?)",
            (raw_id, ts(now), source, "received", ts(now), ts(now)),
        ).lastrowid
        assert message_id is not None
        cls._event(db, message_id, now, "daemon", None, "received", f"accepted from {source}")
        return Accepted(message_id, True)

    @staticmethod
    def _event(db: sqlite3.Connection, message_id: int, now: datetime, actor: str,
               from_state: str | None, to_state: str | None, reason: str) -> None:  # fmt: skip
        db.execute(
            "INSERT INTO events(message_id, at, actor, from_state, to_state, reason) VALUES (?,?,?,?,?,?)",
            (message_id, ts(now), actor, from_state, to_state, reason),
        )

    @staticmethod
    def _audit(db: sqlite3.Connection, actor: str, action: str, message_id: int | None, detail: str,
               now: datetime) -> None:  # fmt: skip
        db.execute(
            "INSERT INTO audit(at, actor, action, message_id, detail) VALUES (?,?,?,?,?)",
            (ts(now), actor, action, message_id, detail),
        )

    def _finish_if_delivered(self, db: sqlite3.Connection, message_id: int, now: datetime) -> str | None:
        state, target, left = db.execute(
            "SELECT state, on_delivered, (SELECT COUNT(*) FROM deliveries WHERE message_id = m.id "
            "AND status NOT IN ('delivered', 'cancelled')) FROM messages m WHERE id = ?",
            (message_id,),
        ).fetchone()
        if state != "routed" or left:
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
