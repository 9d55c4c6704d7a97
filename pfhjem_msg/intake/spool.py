"""The spool directory the hub writes into.

A file is taken once it has not changed for ``settle`` seconds (the hub may write in place,
not atomically). It is claimed by renaming it into ``.claimed/``, stored durably, then removed.
A file claimed before a crash is found in ``.claimed/`` and stored again on the next scan;
storing is idempotent on the bytes, so nothing is doubled. A file that cannot be stored stays
in ``.claimed/`` and is retried; one over the size limit is moved to ``.refused/``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pfhjem_msg import metrics
from pfhjem_msg.errors import StoreError
from pfhjem_msg.logs import get_logger
from pfhjem_msg.store.base import Store

log = get_logger("pfhjem_msg.intake.spool")
SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".swp")


class Spool:
    def __init__(self, directory: Path, store: Store, clock: Callable[[], datetime],
                 settle_seconds: float = 1.0, max_bytes: int = 64 * 1024 * 1024) -> None:  # fmt: skip
        self.directory = directory
        self.claimed = directory / ".claimed"
        self.refused = directory / ".refused"
        self.store = store
        self.clock = clock
        self.settle = settle_seconds
        self.max_bytes = max_bytes
        self.claimed.mkdir(parents=True, exist_ok=True)
        self.last_intake: datetime | None = None

    def _ready(self, limit: int) -> list[Path]:
        """The first ``limit`` files (by name) that have settled. Only those are looked at
        closely, so a backlog of thousands costs one directory read per scan, not a stat each."""
        now = time.time()
        try:
            names = sorted(
                e.name
                for e in os.scandir(self.directory)
                if not e.name.startswith(".") and not e.name.endswith(SKIP_SUFFIXES)
            )
        except OSError as exc:
            log.error("spool.unreadable", directory=str(self.directory), error=exc.strerror)
            return []
        ready: list[Path] = []
        base = os.fspath(self.directory)
        for name in names:
            if len(ready) >= limit:
                break
            try:
                st = os.stat(f"{base}/{name}")
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime >= self.settle:
                ready.append(self.directory / name)
        return ready

    def scan(self, limit: int = 1000) -> int:
        """Store what is waiting (claimed leftovers first); return how many were stored."""
        batch = sorted(self.claimed.iterdir(), key=lambda p: p.name)[:limit]
        for path in self._ready(max(0, limit - len(batch))):
            target = self.claimed / path.name
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue  # taken by another scanner
            except OSError as exc:
                log.error("spool.claim_failed", file=path.name, error=exc.strerror)
                continue
            batch.append(target)
        return self._store(batch)

    def _store(self, paths: list[Path]) -> int:
        """Store the claimed files in one transaction, then remove them."""
        items: list[tuple[Path, bytes]] = []
        for path in paths:
            try:
                size = path.stat().st_size
                if size > self.max_bytes:
                    self.refused.mkdir(exist_ok=True)
                    os.rename(path, self.refused / path.name)
                    log.error("spool.too_large", file=path.name, size=size, limit=self.max_bytes)
                    continue
                items.append((path, path.read_bytes()))
            except OSError as exc:
                log.error("spool.read_failed", file=path.name, error=exc.strerror)
        if not items:
            return 0
        try:
            accepted = self.store.accept_many([(data, f"spool:{p.name}") for p, data in items], self.clock())
        except StoreError as exc:
            log.error("spool.store_failed", files=len(items), error=str(exc)[:200])
            return 0
        for (path, _), result in zip(items, accepted, strict=True):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            if result.new:
                metrics.child(metrics.received, "spool").inc()
            log.info("message.received", message_id=result.message_id, source="spool", file=path.name,
                     new=result.new)  # fmt: skip
        self.last_intake = self.clock()
        return len(items)
