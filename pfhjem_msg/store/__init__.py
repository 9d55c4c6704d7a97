"""The message store: a protocol and its backends."""

from pathlib import Path

from pfhjem_msg.store.base import Store
from pfhjem_msg.store.sqlite import SqliteStore


def open_store(state_dir: Path) -> Store:
    """The store the configuration asks for (the embedded SQLite file for now)."""
    return SqliteStore(state_dir / "pfhjem-msg.sqlite3")


__all__ = ["SqliteStore", "Store", "open_store"]
