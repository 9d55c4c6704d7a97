"""The embedded store: every store protocol over one SQLite file (``sqlite_file``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pfhjem_msg.store.messages import SqlStore
from pfhjem_msg.store.sqlite_file import SqliteBackend


class SqliteStore(SqlStore):
    def __init__(
        self, path: Path, busy_timeout_ms: int = 10_000, create: bool = True, upgrade: bool | None = None
    ) -> None:
        """``create``: the daemon's opening: make the store if there is none, check it
        thoroughly, warn when it is readable by others. Operator commands pass False.
        ``upgrade``: migrate the schema (``create`` unless given; see ``SqliteBackend``)."""
        self._file = SqliteBackend(path, busy_timeout_ms, create, upgrade)
        super().__init__(self._file)
        self.path = path

    @property
    def _db(self) -> sqlite3.Connection:
        """The file's connection, for tests and benchmarks that set rows up directly."""
        return self._file.connection
