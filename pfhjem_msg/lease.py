"""This daemon's hold on the rows it works on.

Several daemons may share one store (PostgreSQL). A daemon does not merely read what is due: it
claims it, writing its id and a lease expiry on the rows (``claimed_by``, ``claimed_until``).
Others leave claimed rows alone until the lease expires; a daemon that dies therefore stops
renewing, and after at most one lease another daemon takes its unfinished messages and
deliveries over. What a daemon commits for a row (processing results, a delivery done or
failed) takes effect only while the row is still claimed by it: one whose lease lapsed and
was taken over finds its work refused, logged, and the other daemon's stands.

The lease is long enough for a drafting round, and renewed while the daemon works (once a
third of it has passed), so a long round does not lose it. On SQLite only one daemon runs per
store (``pfhjem_msg.lock``): it frees every claim at its start, so a restart after a crash
resumes at once instead of after a lease.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from pfhjem_msg.logs import get_logger

log = get_logger("pfhjem_msg.lease")
DEFAULT_SECONDS = 60.0


def daemon_id() -> str:
    """Who claims: host, process and a random part (a pid is reused, a host's name may be too)."""
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(4)}"


class LeaseStore(Protocol):
    def renew_claims(self, owner: str, until: datetime) -> int:
        """Extend the lease of every row ``owner`` holds; how many it holds."""

    def held_deliveries(self, owner: str, delivery_ids: Sequence[int]) -> list[int]:
        """Those of the deliveries ``owner`` still holds."""


class Lease:
    def __init__(self, owner: str, seconds: float, store: LeaseStore, clock: Callable[[], datetime]) -> None:
        self.owner = owner
        self.seconds = seconds
        self.store = store
        self.clock = clock
        self._renewed = time.monotonic()
        self._lock = threading.Lock()

    def until(self) -> datetime:
        """The expiry of a claim made now."""
        return self.clock() + timedelta(seconds=self.seconds)

    @staticmethod
    def claimed() -> float:
        """When (monotonic) a claim is made: ``still_held`` measures from it."""
        return time.monotonic()

    def still_held(self, delivery_ids: Sequence[int], claimed: float) -> set[int]:
        """The deliveries claimed at ``claimed`` that this daemon may still send. Asked of the
        store only once a third of the lease has passed since (until then none can have been
        taken over): a daemon that stood still past its lease (a paused machine, a stalled
        disk) then leaves to the daemon that took them over what it would otherwise send a
        second time."""
        if not delivery_ids or time.monotonic() - claimed < self.seconds / 3:
            return set(delivery_ids)
        return set(self.store.held_deliveries(self.owner, delivery_ids))

    def keep(self) -> None:
        """Renew what this daemon holds once a third of the lease has passed (from the
        pipeline's thread and the delivery thread alike; cheap when nothing is due)."""
        with self._lock:
            if time.monotonic() - self._renewed < self.seconds / 3:
                return
            self._renewed = time.monotonic()
        self.store.renew_claims(self.owner, self.until())
