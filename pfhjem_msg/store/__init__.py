"""The message store: a protocol and its backends."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pfhjem_msg.store.base import OperatorStore, Store
from pfhjem_msg.store.sqlite import SqliteStore
from pfhjem_msg.store.sqlite_file import private_dir

if TYPE_CHECKING:
    from pfhjem_msg.store.edi2 import DaemonStore


def open_store(state_dir: Path, *, create: bool = True, busy_timeout_ms: int = 10_000) -> DaemonStore:
    """The store the configuration asks for (the embedded SQLite file for now). Operator
    commands pass ``create=False``: a wrong state_dir must not silently start an empty store."""
    if create:
        private_dir(state_dir)  # the store holds patient data
    return SqliteStore(state_dir / "pfhjem-msg.sqlite3", busy_timeout_ms, create)


__all__ = ["OperatorStore", "SqliteStore", "Store", "open_store"]
