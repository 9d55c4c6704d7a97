"""The spool directory the hub writes into.

A file is taken once it has not changed for ``settle`` seconds (the hub may write in place,
not atomically). It is claimed by renaming it into ``.claimed/``, stored durably, then removed.
A file claimed before a crash is found in ``.claimed/`` and stored again on a later scan;
storing is idempotent on the bytes, so nothing is doubled. A file that cannot be stored (the
store is down, the disk full) stays in ``.claimed/`` and is retried; ``status`` shows it.

Several daemons may take from one spool (shared storage, one PostgreSQL store). A claim renames
the file to a name of its own in ``.claimed/`` (``.<claimer>.<name>``: the claiming scanner's
random token, then the hub's name), so two daemons never rename onto the same name: a file the
hub writes again under a name still waiting in ``.claimed/`` cannot replace it there. A scanner
retries its own claimed files at once; another's only once it has seen them wait for
``takeover_seconds`` (measured by its own clock, from when it first saw them, so the hosts'
clocks do not matter): by then their claimer has died or cannot store them, and taking them
over loses nothing, as storing the same bytes twice makes one message. A file waiting in
``.claimed/`` under its bare name was claimed before this scheme and is retried at once.

Everything in the spool is untrusted: whoever may write there may also put a symbolic link
to a secret, a FIFO that never ends, a ``/proc`` file that says it is empty, or a huge file.
So every name is used relative to directory descriptors (a ``.claimed`` swapped for a link is
noticed), each file is opened with ``O_NOFOLLOW | O_NONBLOCK``, checked on the open descriptor
(regular files only) and read through it, at most ``max_bytes + 1`` bytes. Anything else is
refused: a row in the store with the reason, size and name (never the content), the file moved
to ``.refused/`` for an operator, a log line and ``pfhjem_refused_total{reason}``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pfhjem_msg import metrics
from pfhjem_msg.errors import StoreError, StoreUnavailable
from pfhjem_msg.logs import get_logger
from pfhjem_msg.store.base import RefusedReason, Store

log = get_logger("pfhjem_msg.intake.spool")
SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".swp")
CLAIMED = ".claimed"
REFUSED = ".refused"
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
UNREADABLE = {errno.EACCES, errno.EPERM}
"""Open errors that are the file's own (its permissions): refused. Anything else (too many
open files, out of memory, I/O) is the daemon's trouble: the file waits for the next scan."""


@dataclass(frozen=True)
class Claimed:
    """Files waiting in ``.claimed/``: taken from the spool but not yet stored."""

    count: int
    oldest: float | None
    """When the oldest was claimed (Unix time), None when there are none."""
    error: str | None = None
    """Why ``.claimed/`` could not be looked into (e.g. run as another user)."""


def claimed_waiting(directory: Path) -> Claimed:
    """What waits in the spool's ``.claimed/`` (for ``status``): normally nothing for more than
    a moment; files that stay there mean the store cannot take them (a full disk)."""
    oldest: float | None = None
    count = 0
    try:
        with os.scandir(directory / CLAIMED) as entries:
            for entry in entries:
                count += 1
                with contextlib.suppress(OSError):
                    changed = entry.stat(follow_symlinks=False).st_ctime  # the claim's rename
                    oldest = changed if oldest is None else min(oldest, changed)
    except FileNotFoundError:
        return Claimed(0, None)
    except OSError as exc:
        return Claimed(0, None, f"cannot look into {directory / CLAIMED}: {exc.strerror}")
    return Claimed(count, oldest)


def claimed_name(claimer: str, name: str) -> str:
    """The name a claimer gives a spool file in ``.claimed/``: a hub's name never starts with
    a dot (such files are skipped), so it cannot be taken for one."""
    return f".{claimer}.{name}"


def split_claimed(entry: str) -> tuple[str | None, str]:
    """(claimer, the hub's name) of an entry of ``.claimed/``; claimer None for a bare name."""
    if entry.startswith("."):
        claimer, dot, name = entry[1:].partition(".")
        if dot and name:
            return claimer, name
    return None, entry


class Spool:
    def __init__(self, directory: Path, store: Store, clock: Callable[[], datetime],
                 settle_seconds: float = 1.0, max_bytes: int = 64 * 1024 * 1024,
                 takeover_seconds: float = 0.0, claimer: str | None = None) -> None:  # fmt: skip
        """``takeover_seconds``: how long another claimer's files wait in ``.claimed/`` before
        this one stores them (0 when this daemon is the spool's only reader: the claimer of
        whatever waits there has died). ``claimer``: the token of a spool this one replaces
        in the same daemon (a reload), so its claimed files stay its own."""
        self.directory = directory
        self.claimed = directory / CLAIMED
        self.refused = directory / REFUSED
        self.store = store
        self.clock = clock
        self.settle = settle_seconds
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._resolved = directory.resolve()
        """Where the configured spool leads at start. Scans open this path without following a
        link at its end: whoever writes into the spool and may also write beside it could
        otherwise swap it for a link to the state directory, and the daemon would claim, store
        and delete the store itself."""
        self.last_intake: datetime | None = None
        self.taken = 0
        """Files stored since the start (for ``run --once``'s summary)."""
        self.refused_count = 0
        self._last_error: str | None = None
        self.claimer = claimer or secrets.token_hex(6)
        self.takeover = takeover_seconds
        self._foreign: dict[str, float] = {}
        """Another claimer's entries in ``.claimed/`` → when (monotonic) this one first saw them."""

    # -- scanning ------------------------------------------------------------------------------

    def scan(self, limit: int = 1000) -> int:
        """Store what is waiting (claimed leftovers first), refuse what may not be taken;
        return how many files were handled."""
        try:
            spool = os.open(self._resolved, DIR_FLAGS)
        except OSError as exc:
            what = "has become a symbolic link since the start" if exc.errno == errno.ELOOP else exc.strerror
            self._error("spool.unreadable", f"cannot open the spool {self.directory}: {what}; "
                        "put the directory back, or restart the daemon if the change is meant")  # fmt: skip
            return 0
        try:
            claimed = self._own_dir(spool, CLAIMED)
            if claimed is None:
                return 0
            try:
                entries = os.listdir(claimed)
                batch = self._leftovers(entries)[:limit]
                waiting = {name for claimer, name in map(split_claimed, entries) if claimer == self.claimer}
                for name in self._ready(spool, max(0, limit - len(batch))):
                    if name in waiting:
                        continue  # an earlier file of that name is not stored yet: it goes first
                    entry = claimed_name(self.claimer, name)
                    try:
                        os.rename(name, entry, src_dir_fd=spool, dst_dir_fd=claimed)
                    except FileNotFoundError:
                        continue  # taken by another scanner
                    except OSError as exc:
                        log.error("spool.claim_failed", file=name, error=exc.strerror)
                        continue
                    batch.append(entry)
                self._last_error = None
                return self._store(spool, claimed, batch)
            finally:
                os.close(claimed)
        finally:
            os.close(spool)

    def _leftovers(self, entries: list[str]) -> list[str]:
        """The entries of ``.claimed/`` to store now, in order: this scanner's own (stored
        again at once), bare names from before, and another claimer's once they have waited
        ``takeover_seconds`` here. Another daemon's files in hand are left to it."""
        now = time.monotonic()
        seen, self._foreign = self._foreign, {}
        out = []
        for entry in sorted(entries):
            claimer, _ = split_claimed(entry)
            if claimer is None or claimer == self.claimer:
                out.append(entry)
                continue
            first = self._foreign[entry] = seen.get(entry, now)
            if now - first >= self.takeover:
                out.append(entry)
                if self.takeover:
                    log.warning("spool.takeover", file=split_claimed(entry)[1], waited_seconds=round(now - first),
                                note="claimed by another daemon that did not store it; stored here")  # fmt: skip
        return out

    def _ready(self, spool: int, limit: int) -> list[str]:
        """The first ``limit`` names (in order) that are settled regular files or not regular
        files at all (those are refused at once; waiting would not make them regular). Only
        those are looked at closely, so a backlog of thousands costs one directory read per
        scan, not a stat each."""
        now = time.time()
        ready: list[str] = []
        for name in self._candidates(spool):
            if len(ready) >= limit:
                break
            try:
                st = os.stat(name, dir_fd=spool, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime >= self.settle:
                ready.append(name)
        return ready

    @staticmethod
    def _candidates(spool: int | Path) -> list[str]:
        return sorted(
            name
            for name in os.listdir(spool)
            if not name.startswith(".") and not name.endswith(SKIP_SUFFIXES)
        )

    def _own_dir(self, spool: int, name: str) -> int | None:
        """A descriptor of the spool's ``.claimed`` or ``.refused``: made 0700 if missing, and
        refused if it is a link, not a directory, or someone else's (it could point the daemon's
        reads and deletions anywhere)."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=spool)
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=spool)
        except OSError as exc:
            what = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
            self._error("spool.dir_unusable", f"{self.directory / name} is {what}: move it away; "
                        "the daemon makes its own")  # fmt: skip
            return None
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            os.close(fd)
            self._error("spool.dir_unusable", f"{self.directory / name} belongs to uid {st.st_uid}, not to the "
                        "daemon: move it away; the daemon makes its own")  # fmt: skip
            return None
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o700)  # what waits here may be patient data
        return fd

    def _error(self, event: str, detail: str) -> None:
        """Log a scan-stopping problem once, not on every poll."""
        if detail != self._last_error:
            log.error(event, detail=detail)
            self._last_error = detail

    # -- taking --------------------------------------------------------------------------------

    def _store(self, spool: int, claimed: int, names: list[str]) -> int:
        """Store the claimed files in one transaction, then remove them; refuse the others."""
        items: list[tuple[str, bytes]] = []
        refusals: list[tuple[str, RefusedReason, int | None]] = []
        for entry in names:
            outcome = self._read(claimed, entry)
            if isinstance(outcome, bytes):
                items.append((entry, outcome))
            elif outcome is not None:
                refusals.append((entry, *outcome))
        moved = sum(self._refuse(spool, claimed, entry, reason, size) for entry, reason, size in refusals)
        if not items:
            return moved
        try:
            accepted = self.store.accept_many(
                [(data, f"spool:{split_claimed(entry)[1]}") for entry, data in items], self.clock()
            )
        except StoreUnavailable:
            return moved  # the files wait in .claimed; the store logged its outage once
        except StoreError as exc:
            log.error("spool.store_failed", files=len(items), error=str(exc)[:200])
            return moved
        for (entry, _), result in zip(items, accepted, strict=True):
            name = split_claimed(entry)[1]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry, dir_fd=claimed)  # gone: another daemon took it over and stored it too
            if result.new:
                metrics.child(metrics.received, "spool").inc()
            log.info("message.received", message_id=result.message_id, source="spool", file=name,
                     new=result.new)  # fmt: skip
        self.taken += len(items)
        self.last_intake = self.clock()
        return len(items) + moved

    def _read(self, claimed: int, name: str) -> bytes | tuple[RefusedReason, int | None] | None:
        """The file's bytes; or why it is refused (and its size, when it has one); or None
        when it is gone or cannot be read just now (it is tried again on the next scan)."""
        try:
            fd = os.open(name, OPEN_FLAGS, dir_fd=claimed)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return ("symlink", None)
            if exc.errno == errno.ENXIO:  # a socket
                return ("not_regular", None)
            if exc.errno in UNREADABLE:
                return ("unreadable", self._size(claimed, name))
            log.error("spool.read_failed", file=name, error=exc.strerror)
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return ("not_regular", None)
            if st.st_size > self.max_bytes:
                return ("too_large", st.st_size)
            chunks: list[bytes] = []
            total = 0
            while total <= self.max_bytes:
                chunk = os.read(fd, min(self.max_bytes + 1 - total, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            if total > self.max_bytes:  # grew after the check, or says less than it holds
                return ("too_large", max(total, st.st_size))
            return b"".join(chunks)
        except OSError as exc:
            log.error("spool.read_failed", file=name, error=exc.strerror)
            return None
        finally:
            os.close(fd)

    @staticmethod
    def _size(directory: int, name: str) -> int | None:
        try:
            return os.stat(name, dir_fd=directory, follow_symlinks=False).st_size
        except OSError:
            return None

    def _refuse(self, spool: int, claimed: int, entry: str, reason: RefusedReason, size: int | None) -> bool:
        """Note the refusal in the store first (durably), then move the file to ``.refused/``
        under the hub's name. False when either cannot be done: the file stays claimed and is
        tried again (and is not counted as work done, so a broken ``.refused`` cannot spin the
        daemon)."""
        name = split_claimed(entry)[1]
        refused = self._own_dir(spool, REFUSED)
        if refused is None:
            return False
        try:
            try:
                self.store.record_refused("spool", name, reason, size, self.clock())
            except StoreError as exc:
                log.error("spool.store_failed", files=1, error=str(exc)[:200])
                return False
            target = name
            for n in range(1, 1000):
                if self._size(refused, target) is None:
                    break
                target = f"{name}.{n}"
            try:
                os.rename(entry, target, src_dir_fd=claimed, dst_dir_fd=refused)
            except OSError as exc:
                log.error("spool.refuse_move_failed", file=name, error=exc.strerror)
                return False
        finally:
            os.close(refused)
        self.refused_count += 1
        metrics.child(metrics.refused, reason).inc()
        log.error("spool.refused", file=name, reason=reason, size=size, limit=self.max_bytes,
                  moved_to=str(self.refused / target))  # fmt: skip
        return True

    # -- run --once ----------------------------------------------------------------------------

    def _unsettled(self) -> list[float]:
        """Seconds each regular file in the spool still needs to settle."""
        now = time.time()
        out: list[float] = []
        try:
            names = self._candidates(self.directory)
        except OSError:
            return out
        for name in names:
            try:
                st = os.stat(self.directory / name, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime < self.settle:
                out.append(self.settle - (now - st.st_mtime))
        return out

    def wait_until_settled(self, margin: float = 1.0) -> None:
        """Wait until the files now waiting have settled, at most ``settle`` plus ``margin``
        seconds: ``run --once`` right after a copy must take the copy, not leave it silently."""
        deadline = time.monotonic() + self.settle + margin
        while True:
            remaining = self._unsettled()
            left = deadline - time.monotonic()
            if not remaining or left <= 0:
                return
            time.sleep(min(max(remaining), left) + 0.01)

    def report_once(self) -> dict[str, int]:
        """Say how many files were taken and how many were left, and why (logged; returned
        for the caller's summary)."""
        settling = len(self._unsettled())
        try:
            temporary = sum(
                1 for n in os.listdir(self.directory) if not n.startswith(".") and n.endswith(SKIP_SUFFIXES)
            )
        except OSError:
            temporary = 0
        claimed = claimed_waiting(self.directory).count
        summary = {
            "taken": self.taken,
            "refused": self.refused_count,
            "left": settling + temporary + claimed,
            "left_still_changing": settling,
            "left_temporary_name": temporary,
            "left_not_stored": claimed,
        }
        if summary["left"]:
            log.warning("spool.left", **summary,
                        why="still changing after settle_seconds, a temporary name (.tmp, .part, …), "
                            "or the store could not take them (they stay in .claimed)")  # fmt: skip
        else:
            log.info("spool.taken", **summary)
        return summary
