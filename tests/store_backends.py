"""Both store backends for the contract suite: a real SQLite file, and a real PostgreSQL
database (127.0.0.1:5432, trust auth, or ``PFHJEM_TEST_PG`` as a libpq URL to a database
from which others may be created).

Each test run creates its own databases, with random names, and drops them at the end. The
contract suite gets one migrated database per run and an empty store per test (the tables
emptied, identities restarted): much faster than a database per test. A test that needs an
empty database of its own (migrations, copies) asks ``PgServer.fresh``.

PostgreSQL that cannot be reached fails the tests that need it when ``CI=true`` and skips them
with the reason otherwise."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from pfhjem_msg.store.messages import SqlStore

ADMIN_URL = os.environ.get("PFHJEM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ("sqlite", "postgresql")


def unreachable(reason: str) -> None:
    """Fail in CI, skip elsewhere, with the reason either way."""
    text = f"PostgreSQL for the store tests is not reachable at {ADMIN_URL}: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(text + " (CI=true: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(text)


def url_for(database: str) -> str:
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path="/" + database))


@dataclass
class PgServer:
    """The test run's databases on one PostgreSQL server."""

    prefix: str = field(default_factory=lambda: f"pfhjem_test_{secrets.token_hex(4)}")
    made: list[str] = field(default_factory=list)

    def admin(self) -> object:
        import psycopg

        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)

    def fresh(self) -> str:
        """The URL of a new, empty database of this run."""
        name = f"{self.prefix}_{len(self.made)}"
        with self.admin() as conn:  # type: ignore[attr-defined]
            conn.execute(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        return url_for(name)

    def drop_all(self) -> None:
        with self.admin() as conn:  # type: ignore[attr-defined]
            for name in self.made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.made.clear()


def pg_server_fixture() -> Iterator[PgServer]:
    try:
        import psycopg

        psycopg.connect(ADMIN_URL, connect_timeout=5).close()
    except ImportError as exc:
        unreachable(f"psycopg is not installed ({exc})")
    except Exception as exc:
        unreachable(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    server = PgServer()
    try:
        yield server
    finally:
        server.drop_all()


def empty_tables(url: str) -> None:
    """The store at ``url`` emptied, its identities restarted: as new, without a new database."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_name != 'pfhjem_meta'"
        )]  # fmt: skip
        conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")


@dataclass
class StoreFactory:
    """Opens stores of one backend, all on the same store (a file, or a database)."""

    kind: str
    open: Callable[[], SqlStore]
    opened: list[SqlStore] = field(default_factory=list)

    def __call__(self) -> SqlStore:
        store = self.open()
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


def sqlite_factory(directory: Path) -> StoreFactory:
    from pfhjem_msg.store.sqlite import SqliteStore

    return StoreFactory("sqlite", lambda: SqliteStore(directory / "store.sqlite3"))


def postgres_factory(url: str) -> StoreFactory:
    from pfhjem_msg.store.postgres import PostgresStore

    return StoreFactory("postgresql", lambda: PostgresStore(url))
