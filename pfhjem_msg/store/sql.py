"""The small connection interface the store's queries are written against, so one set of
queries serves the SQLite file and PostgreSQL.

Statements are written once, with ``?`` placeholders; a backend translates them for its
driver. Rows are indexable by column name and by position on both backends. What differs
between the two SQL dialects and cannot be written portably is a ``Dialect`` attribute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar

T = TypeVar("T")

Row: TypeAlias = Any
"""A result row: ``row["column"]`` and ``row[0]``, unpackable like a tuple."""


@dataclass(frozen=True)
class Dialect:
    name: str
    skip_locked: str
    """Appended to a ``SELECT`` that claims rows: other daemons skip them instead of waiting."""
    for_update: str
    """Appended to a ``SELECT`` of a row the transaction then changes from what it read: a
    concurrent transaction waits for this one (SQLite's writers take turns anyway)."""
    same: str
    """The comparison that holds when both sides are equal or both NULL: SQLite's ``IS`` (its
    ``IS NOT DISTINCT FROM`` needs 3.39, newer than some supported systems ship)."""


SQLITE = Dialect("sqlite", "", "", "IS")
POSTGRESQL = Dialect("postgresql", " FOR UPDATE SKIP LOCKED", " FOR UPDATE", "IS NOT DISTINCT FROM")


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Row:
        """The next row, or None."""
        ...

    def fetchall(self) -> list[Row]: ...

    def __iter__(self) -> Iterator[Row]: ...


class Db(Protocol):
    """One connection inside one transaction (``Backend.run``)."""

    dialect: Dialect

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def insert(self, sql: str, args: Sequence[Any]) -> int:
        """Run an ``INSERT`` of one row and give its new ``id`` (``RETURNING id``: neither
        driver's ``lastrowid`` means the same on both)."""
        ...


class Backend(Protocol):
    """Where the store's rows live: transactions, reads, and the upkeep that is the backend's
    own business (giving freed space back, its size on disk)."""

    dialect: Dialect
    where: str
    """The store as an operator names it in a message: the file, or the URL without password."""
    version_before: int
    """The schema version the store had when it was opened (before migrations)."""
    version: int

    def run(self, work: Callable[[Db], T], durable: bool = True) -> T:
        """Run ``work`` in one transaction, committed on return, rolled back on an exception.
        ``durable``: on disk before it returns (intake, deliveries, operator changes)."""
        ...

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...

    def size(self) -> int:
        """Bytes the store takes on disk (what ``prune`` reports before and after)."""
        ...

    def compact(self) -> None:
        """Give the space freed by pruning back, as far as the backend can."""
        ...

    def advisory_lock(self, key1: int, key2: int) -> AbstractContextManager[bool]:
        """Whether this process may do what the keys name while no other does: for the time
        of the ``with`` block, on a connection held for it. The SQLite file has one daemon:
        always True there."""
        ...

    def close(self) -> None: ...


def returning_id(sql: str) -> str:
    return sql.rstrip() + " RETURNING id"
