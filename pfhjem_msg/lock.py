"""One daemon per SQLite store: an exclusive lock on a file in the state directory.

The SQLite file is for one daemon on one machine: ``run`` (and ``run --once``) hold the lock
for as long as they live, and a second daemon on the same store is refused; operator commands
do not take it and work beside a running daemon. ``store migrate`` takes it while it migrates:
it is refused while a daemon runs, and no daemon starts meanwhile. Several daemons share a PostgreSQL store,
where the rows' claims (``pfhjem_msg.lease``) keep them from doing the same work twice; they
take no file lock. The lock is a POSIX record lock (``lockf``) rather
than ``flock``: forked drafting workers do not inherit it, so a daemon killed with SIGKILL
frees its store at once, even while its workers are still going down. The file holds the
holder's pid, for the message a second daemon prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

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
