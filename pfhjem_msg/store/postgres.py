"""PostgreSQL under the store (``[store] url``): the same queries as the SQLite file, through a
small pool of psycopg connections.

Each transaction commits durably (``synchronous_commit`` as the server has it, ``on`` by
default: a commit returns once the WAL is flushed); processing steps, which are derived and
are simply done again, set it ``off`` for themselves, like ``synchronous=NORMAL`` on SQLite.
Originals and payloads are ``bytea`` rows. The schema's version and the application that made
it are kept in ``pfhjem_meta``, so another program's database, or one from a newer version, is
refused rather than written to; migrations run under an advisory lock, so daemons that start
at once do not race them. Text columns use the "C" collation: times stored as text compare as
they do in SQLite, whatever the database's locale.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool, PoolTimeout

from pfhjem_msg.errors import StoreError, StoreUnavailable
from pfhjem_msg.logs import get_logger
from pfhjem_msg.store import schema
from pfhjem_msg.store.messages import SqlStore
from pfhjem_msg.store.schema import MIGRATIONS
from pfhjem_msg.store.sql import POSTGRESQL, Cursor, Db, Row, returning_id
from pfhjem_msg.store.url import masked

T = TypeVar("T")
log = get_logger("pfhjem_msg.store")

APPLICATION = "pfhjem-msg"
MIGRATION_LOCK = 0x70666A6D
"""The advisory lock key held while the schema is checked and migrated ("pfjm")."""
POOL_SIZE = 4


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s``; a literal ``%`` (``LIKE 'x%'``) doubled."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgRow(tuple[Any, ...]):
    """A row indexable by position and by column name, like ``sqlite3.Row``."""

    names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names[key])
        return tuple.__getitem__(self, key)


def _rows(cursor: Any) -> RowMaker[PgRow]:
    names = {c.name: i for i, c in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> PgRow:
        row = PgRow(values)
        row.names = names
        return row

    return make


class PgDb:
    """The connection interface (``store.sql.Db``) over one psycopg connection."""

    dialect = POSTGRESQL

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._c = connection

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self._c.execute(translate(sql), tuple(args))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if rows:
            with self._c.cursor() as cur:
                cur.executemany(translate(sql), rows)

    def insert(self, sql: str, args: Sequence[Any]) -> int:
        return int(self.execute(returning_id(sql), args).fetchone()[0])


def _failure(where: str, exc: PoolTimeout | psycopg.Error) -> StoreError:
    """``StoreUnavailable`` when the server cannot be reached or has no connection to spare
    (it may pass), ``StoreError`` for what the server refused."""
    if isinstance(exc, PoolTimeout):
        return StoreUnavailable(
            f"the store {where} has no free connection: PostgreSQL does not answer, or is "
            "overloaded; check it, then try again"
        )
    if isinstance(exc, psycopg.OperationalError):
        return StoreUnavailable(_explain(where, exc))
    return StoreError(_explain(where, exc))


def _explain(where: str, exc: psycopg.Error) -> str:
    """The server's primary message and SQLSTATE, never its detail lines (they may quote row
    values)."""
    primary = exc.diag.message_primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, psycopg.OperationalError):
        return (
            f"the store {where} cannot be reached ({primary}); check that PostgreSQL runs and "
            "[store] url, then try again"
        )
    return f"the store {where} failed: {primary} (SQLSTATE {exc.sqlstate or '-'}); try again, and report it if it stays"


class PostgresBackend:
    """The store's rows in one PostgreSQL database."""

    dialect = POSTGRESQL

    def __init__(self, url: str, *, create: bool = True, pool_size: int = POOL_SIZE) -> None:
        """``create``: the daemon's opening: an empty database gets the schema, an older one is
        migrated. Operator commands pass False and are told to run ``store migrate``."""
        self.url = url
        self.where = masked(url)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "row_factory": _rows, "connect_timeout": 10},
            check=ConnectionPool.check_connection,
            open=False,
            name="pfhjem-store",
        )
        reason = self._why_not()
        if reason is not None:
            raise StoreUnavailable(
                f"cannot connect to the store {self.where}: {reason}; check that PostgreSQL runs, and "
                "the host, port, user, database and password of [store] url"
            )
        try:
            self._pool.open(wait=True, timeout=15)
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreUnavailable(
                f"cannot connect to the store {self.where}: no connection within 15 s; check that "
                "PostgreSQL runs and accepts connections (max_connections)"
            ) from exc
        try:
            self.version_before, self.version = self._check_and_migrate(create)
        except BaseException:
            self._pool.close()
            raise

    def _why_not(self) -> str | None:
        """Why a connection fails, in the server's or the network's words, at once (the pool
        would retry until its timeout and then only say that it timed out); None: it works."""
        try:
            psycopg.connect(self.url, connect_timeout=10).close()
        except psycopg.Error as exc:
            text = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            return text[-1] if text else type(exc).__name__
        return None

    # -- the schema --------------------------------------------------------------------------

    def _check_and_migrate(self, migrate: bool) -> tuple[int, int]:
        def work(db: Db) -> tuple[int, int]:
            db.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            meta = db.execute("SELECT to_regclass('pfhjem_meta') IS NOT NULL").fetchone()[0]
            if not meta:
                tables = [r[0] for r in db.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                    "ORDER BY table_name LIMIT 5"
                )]  # fmt: skip
                if tables:
                    raise StoreError(
                        f"the database {self.where} is not a pfhjem-msg store (it has other tables: "
                        f"{', '.join(tables)}) and was left as it is: point [store] url at a database "
                        "of its own (CREATE DATABASE pfhjem_msg OWNER ...)"
                    )
                version = 0
            else:
                facts = dict(db.execute("SELECT key, value FROM pfhjem_meta").fetchall())
                if facts.get("application") != APPLICATION:
                    raise StoreError(
                        f"the database {self.where} is not a pfhjem-msg store (its pfhjem_meta names "
                        f"{facts.get('application')!r}) and was left as it is: check [store] url"
                    )
                version = int(facts.get("schema_version", "0"))
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"the store {self.where} was made by a newer pfhjem-msg (schema {version}, this one "
                    f"knows {len(MIGRATIONS)}): run the newer version, or restore the database from a backup"
                )
            if version == len(MIGRATIONS):
                return version, version
            if not migrate:
                what = "is empty" if version == 0 else f"is at schema {version} of {len(MIGRATIONS)}"
                raise StoreError(
                    f"the store {self.where} {what}: run `pfhjem-msg store migrate --config FILE` "
                    "(or start the daemon, which does it), then try again"
                )
            if not meta:
                db.execute('CREATE TABLE pfhjem_meta (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL)')
                db.execute("INSERT INTO pfhjem_meta(key, value) VALUES ('application', ?)", (APPLICATION,))
                db.execute("INSERT INTO pfhjem_meta(key, value) VALUES ('schema_version', '0')")
            reached = schema.apply(db, version)
            db.execute("UPDATE pfhjem_meta SET value = ? WHERE key = 'schema_version'", (str(reached),))
            log.info("store.migrated", store=self.where, from_version=version, to_version=reached)
            return version, reached

        return self.run(work)

    # -- the backend interface -----------------------------------------------------------------

    def run(self, work: Callable[[Db], T], durable: bool = True) -> T:
        try:
            with self._pool.connection() as conn, conn.transaction():
                if not durable:
                    conn.execute("SET LOCAL synchronous_commit = off")
                return work(PgDb(conn))
        except (PoolTimeout, psycopg.Error) as exc:
            raise _failure(self.where, exc) from exc

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        try:
            with self._pool.connection() as conn:
                return conn.execute(translate(sql), tuple(args)).fetchall()
        except (PoolTimeout, psycopg.Error) as exc:
            raise _failure(self.where, exc) from exc

    def size(self) -> int:
        return int(self.read("SELECT pg_database_size(current_database())")[0][0])

    def compact(self) -> None:
        """Mark what pruning freed as reusable now rather than at autovacuum's next turn. Plain
        VACUUM gives little back to the file system; VACUUM FULL would lock the tables while the
        daemon runs, and is left to the database's administrator."""
        try:
            with self._pool.connection() as conn:
                conn.execute("VACUUM (ANALYZE) raw, deliveries, events, messages")
        except psycopg.Error as exc:
            log.warning("store.vacuum_failed", store=self.where, error=type(exc).__name__)

    def close(self) -> None:
        self._pool.close()


class PostgresStore(SqlStore):
    """Every store protocol over one PostgreSQL database."""

    def __init__(self, url: str, *, create: bool = True, pool_size: int = POOL_SIZE) -> None:
        """``create``: the daemon's opening (the schema made or migrated when needed). Operator
        commands pass False: a database without the current schema is refused with what to do."""
        self.backend = PostgresBackend(url, create=create, pool_size=pool_size)
        super().__init__(self.backend)
