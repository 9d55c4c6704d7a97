"""One daemon per SQLite store: an exclusive lock on a file in the state directory.

The SQLite file is for one daemon on one machine: ``run`` (and ``run --once``) hold the lock
for as long as they live, and a second daemon on the same store is refused; operator commands
do not take it and work beside a running daemon. ``store migrate`` takes it while it migrates:
it is refused while a daemon runs, and no daemon starts meanwhile. Several daemons share a PostgreSQL store,
where the rows' claims (``pfhjem_msg.lease``) keep them from doing the same work twice; they
take no file lock, and each holds a shared advisory lock there instead (``Presence``), which
``store migrate`` must get exclusively. The lock is a POSIX record lock (``lockf``) rather
than ``flock``: forked drafting workers do not inherit it, so a daemon killed with SIGKILL
frees its store at once, even while its workers are still going down. The file holds the
holder's pid, for the message a second daemon prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pfhjem_msg.errors import PfhjemError, StoreError

if TYPE_CHECKING:
    from pfhjem_msg.config import Settings

LOCK_NAME = "pfhjem-msg.lock"


def runs_alone(settings: Settings) -> bool:
    """Whether this daemon must be its store's only one: on the SQLite file, yes."""
    return settings.store_url is None


class StoreBusy(PfhjemError):
    """Another daemon holds the store (exit 2); ``pid`` is the one it wrote, or "unknown"."""

    def __init__(self, message: str, pid: str) -> None:
        super().__init__(message)
        self.pid = pid


class StoreLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StoreLock:
        """Take the store's lock or raise StoreBusy naming the daemon that holds it."""
        if not state_dir.exists():
            try:
                state_dir.mkdir(mode=0o700, parents=True)  # as the store does: it holds patient data
            except OSError as exc:
                raise StoreError(
                    f"cannot create the state directory {state_dir}: {exc.strerror}; create it for the "
                    f"user the daemon runs as (uid {os.geteuid()}), mode 0700, or correct state_dir "
                    "(under systemd, StateDirectory= creates it)"
                ) from None
        path = state_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(
                f"cannot open the store's lock file {path}: {exc.strerror}; check state_dir and its owner"
            ) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid = _holder(path)
            raise StoreBusy(
                f"another daemon (pid {pid}) runs on this store ({state_dir}); "
                "stop it first, or give this one its own state_dir",
                pid,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Free the store (closing the file drops the lock; the file stays, harmless)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def _holder(path: Path) -> str:
    """The pid the holder wrote; it writes just after locking, so wait a moment for it."""
    for _ in range(20):
        with contextlib.suppress(OSError):
            text = path.read_text(encoding="ascii").strip()
            if text.isdigit():
                return text
        time.sleep(0.01)
    return "unknown"


PRESENCE_JOB = "daemon presence"
"""The advisory lock every daemon on a PostgreSQL store holds shared while it runs."""


def _presence_key() -> tuple[int, int]:
    from pfhjem_msg.store.claims import ADVISORY_CLASS, advisory_key

    return ADVISORY_CLASS, advisory_key(PRESENCE_JOB)


class Presence:
    """A daemon on a PostgreSQL store says it runs: a shared session advisory lock, on a
    connection of its own named after the daemon (``application_name``), held until it stops.
    Any number of daemons hold it together; ``store migrate`` tries it exclusively and is
    refused, naming them, while one does. The server drops it with the connection, so a daemon
    killed with SIGKILL holds nothing; one whose connection broke takes it again (``keep``)."""

    def __init__(self, url: str, daemon: str) -> None:
        self.url = url
        self.daemon = daemon
        self._conn: Any = None
        self._taken_at = 0.0
        self.keep()

    def keep(self, every: float = 0.0) -> None:
        """Check (at most ``every`` seconds apart) that the lock is still held, and take it
        again on a new connection if it is not; a failure is logged, and tried again later."""
        import psycopg

        now = time.monotonic()
        if self._conn is not None and now - self._taken_at < every:
            return
        self._taken_at = now
        try:
            if self._conn is not None and not self._conn.closed:
                self._conn.execute("SELECT 1")
                return
        except psycopg.Error:
            self.close()
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10,
                                   application_name=f"pfhjem-msg daemon {self.daemon}"[:63])  # fmt: skip
            conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", _presence_key())
            self._conn = conn
        except psycopg.Error as exc:
            from pfhjem_msg.logs import get_logger

            get_logger("pfhjem_msg.lock").warning(
                "daemon.presence_lost", error=type(exc).__name__,
                note="`store migrate` cannot see this daemon until it is taken again (next rounds)",
            )  # fmt: skip

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


@contextlib.contextmanager
def no_daemons(url: str, where: str) -> Iterator[None]:
    """Hold the presence lock exclusively while ``store migrate`` works, or refuse naming the
    daemons that run on the store (their ``application_name``: host, pid, random part)."""
    import psycopg

    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10,
                               application_name="pfhjem-msg store migrate")  # fmt: skip
    except psycopg.Error:
        yield  # the store's own opening says why it cannot connect
        return
    try:
        key1, key2 = _presence_key()
        taken = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (key1, key2)).fetchone()
        if taken is None or not taken[0]:
            names = _daemons(conn, key1, key2)
            if not names:  # another `store migrate` holds it: wait for it, and find its work done
                try:
                    conn.execute("SET lock_timeout = '120s'")
                    conn.execute("SELECT pg_advisory_lock(%s, %s)", (key1, key2))
                except psycopg.errors.LockNotAvailable:
                    names = _daemons(conn, key1, key2) or ["another `store migrate`"]
            if names:
                raise StoreError(
                    f"{len(names)} daemon(s) run on the store {where} ({', '.join(names)}), so it was "
                    "not migrated: stop every daemon on it (systemctl stop pfhjem-msg on each server), "
                    "then run `pfhjem-msg store migrate` again, or start the new version's daemons, "
                    "which migrate at their start"
                )
        yield
    finally:
        conn.close()


def _daemons(conn: Any, key1: int, key2: int) -> list[str]:
    """The daemons holding the presence lock shared on this database: their ids."""
    rows = conn.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ShareLock' "
        "AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.objsubid = 2 AND l.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1",
        (key1 & 0xFFFFFFFF, key2 & 0xFFFFFFFF),
    ).fetchall()
    return [str(r[0]).removeprefix("pfhjem-msg daemon ") for r in rows]
