"""The message store: its protocols (``base``), one set of queries (``messages`` and its
parts), and two backends: the embedded SQLite file in ``state_dir`` (the default) and
PostgreSQL (``[store] url``). ``open_store`` is the one place that chooses."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pfhjem_msg.store.base import OperatorStore, Store
from pfhjem_msg.store.messages import SqlStore
from pfhjem_msg.store.sqlite import SqliteStore
from pfhjem_msg.store.sqlite_file import private_dir

if TYPE_CHECKING:
    from pfhjem_msg.config import Settings

SQLITE_NAME = "pfhjem-msg.sqlite3"


def open_store(
    where: Settings | Path, *, create: bool = True, upgrade: bool | None = None, busy_timeout_ms: int = 10_000
) -> SqlStore:
    """The store the configuration asks for (every store protocol: ``SqlStore``): PostgreSQL when ``[store] url`` is set, else the
    SQLite file in ``state_dir`` (a bare path: that directory's file). Operator commands pass
    ``create=False``: a wrong state_dir or an unmigrated database must not silently start an
    empty store, nor migrate the schema under a running daemon. ``upgrade`` (``create`` unless
    given): migrate an older schema; ``store migrate`` passes it without ``create``."""
    if isinstance(where, Path):
        state_dir, url = where, None
    else:
        state_dir, url = where.state_dir, where.store_url
    if url is not None:
        from pfhjem_msg.store.postgres import PostgresStore  # psycopg only when it is used

        return PostgresStore(url, create=create if upgrade is None else upgrade)
    if create:
        private_dir(state_dir)  # the store holds patient data
    return SqliteStore(state_dir / SQLITE_NAME, busy_timeout_ms, create, upgrade)


__all__ = ["SQLITE_NAME", "OperatorStore", "SqliteStore", "Store", "open_store"]
