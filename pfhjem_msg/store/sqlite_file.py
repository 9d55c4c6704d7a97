"""The SQLite file under the store: the connection (WAL; ``synchronous=FULL`` for the commits
that must be on disk when they return: intake and deliveries), transactions, the schema
version in ``PRAGMA user_version``, and giving pruned space back. The daemon and the operator
commands may use the same file at once.

The store holds patient data and is the only record of what is due, so it is private and is
never silently replaced. A new store is made only where there is none: complete under a
temporary name (0600 whatever the umask; SQLite gives its ``-wal``/``-shm`` files the same
mode), then linked into place, so a crash never leaves a half-made one. An existing file that
is empty, not SQLite, another program's database (``PRAGMA application_id``) or damaged
(``PRAGMA quick_check``, at the daemon's start) is refused with what to do, never replaced.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pfhjem_msg.errors import StoreError
from pfhjem_msg.logs import get_logger
from pfhjem_msg.store import schema
from pfhjem_msg.store.schema import MIGRATIONS
from pfhjem_msg.store.sql import SQLITE, Cursor, Db, Row, returning_id

T = TypeVar("T")
log = get_logger("pfhjem_msg.store")

APPLICATION_ID = 0x70666A6D
"""``PRAGMA application_id`` of our stores ("pfjm"): tells ours from any other SQLite file."""
SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_MINIMUM = (3, 35, 0)
"""The oldest SQLite library the store's statements run on: ``RETURNING`` (3.35) and upserts,
``ON CONFLICT (...) DO UPDATE ... WHERE`` (3.24)."""
CORE_TABLES = frozenset({"raw", "messages", "deliveries", "events"})
"""What a store made before the application id existed has (adopted, and then marked)."""


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


def migrate(db: sqlite3.Connection) -> tuple[int, int]:
    """Bring the schema up to date (in the caller's transaction): the versions before and after."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    reached = version
    if version < len(MIGRATIONS):
        reached = schema.apply(SqliteDb(db), version)
        db.execute(f"PRAGMA user_version={reached}")
    if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
        db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    return version, reached


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


def check_sqlite_version(path: Path, version: tuple[int, int, int] | None = None) -> None:
    """Refuse before touching the store when Python's SQLite library is too old for its
    statements (they would fail one by one, mid-work)."""
    version = version or sqlite3.sqlite_version_info
    if version < SQLITE_MINIMUM:
        have, need = ".".join(map(str, version)), ".".join(map(str, SQLITE_MINIMUM))
        raise StoreError(
            f"cannot open the store {path}: this Python's SQLite library is {have}, the store needs "
            f"{need} or newer; run pfhjem-msg with a Python built against a newer SQLite (the python3 "
            "of Ubuntu 22.04 or Debian 12 and later has one), or use a PostgreSQL store"
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


class SqliteDb:
    """The connection interface (``store.sql.Db``) over one SQLite connection."""

    dialect = SQLITE

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._c = connection

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self._c.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._c.executemany(sql, rows)

    def insert(self, sql: str, args: Sequence[Any]) -> int:
        return int(self._c.execute(returning_id(sql), args).fetchone()[0])


class SqliteBackend:
    """The store's rows in one SQLite file."""

    dialect = SQLITE

    def __init__(
        self, path: Path, busy_timeout_ms: int = 10_000, create: bool = True, upgrade: bool | None = None
    ) -> None:
        """``create``: the daemon's opening: make the store if there is none, check it
        thoroughly, warn when it is readable by others. Operator commands pass False.
        ``upgrade`` (``create`` unless given): bring the schema up to date; otherwise a schema
        behind this version is refused. Only the daemon's start and ``store migrate`` upgrade:
        an operator command of a new version, run before the old daemon is stopped, must not
        change the schema under it (a migration may drop what the old code writes)."""
        self.path = path
        self.where = str(path)
        check_sqlite_version(path)
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
            self._db.row_factory = sqlite3.Row
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
        self._conn = SqliteDb(self._db)
        if create if upgrade is None else upgrade:
            self.version_before, self.version = self.run(lambda db: migrate(self._db))
        else:
            self.version_before = self.version = self._current()

    def _current(self) -> int:
        """The schema's version, which must be this version's: an operator command refuses an
        older one, as it does on PostgreSQL, rather than migrating it under a running daemon."""
        version = int(self.read("PRAGMA user_version")[0][0])
        if version < len(MIGRATIONS):
            self.close()
            raise StoreError(
                f"the store {self.path} is at schema {version} of {len(MIGRATIONS)}: stop the daemon, "
                "run `pfhjem-msg store migrate --config FILE` (or start the daemon, which does it), "
                "then try again"
            )
        return version

    @property
    def connection(self) -> sqlite3.Connection:
        """The SQLite connection itself, for what only a file has (tests that look at pages)."""
        return self._db

    def run(self, work: Callable[[Db], T], durable: bool = True) -> T:
        """One IMMEDIATE transaction. Not ``durable``: ``synchronous=NORMAL`` for it (the WAL
        survives a crash of the process, not a power loss)."""
        with self._lock:
            try:
                if durable != self._durable:
                    self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                    self._durable = durable
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._conn)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise StoreError(_explain(self.path, exc)) from exc

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(_explain(self.path, exc)) from exc

    def size(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            path = self.path.with_name(self.path.name + suffix)
            if path.exists():
                total += path.stat().st_size
        return total

    def compact(self) -> None:
        """Give the freed pages back to the file system (incremental vacuum; a store made
        before that was switched on is converted once with a full VACUUM)."""
        with self._lock:
            mode = self._db.execute("PRAGMA auto_vacuum").fetchone()[0]
            if mode != 2:
                self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                self._db.execute("VACUUM")
            else:
                self._db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page
            self._db.executescript("PRAGMA wal_checkpoint(TRUNCATE);")

    @contextlib.contextmanager
    def advisory_lock(self, key1: int, key2: int) -> Iterator[bool]:
        yield True  # one daemon per file (``pfhjem_msg.lock``)

    def close(self) -> None:
        with self._lock:
            self._db.close()
