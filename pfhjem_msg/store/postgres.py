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

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool, PoolTimeout

from pfhjem_msg import metrics
from pfhjem_msg.errors import StoreError, StoreUnavailable
from pfhjem_msg.logs import get_logger
from pfhjem_msg.store import schema
from pfhjem_msg.store.messages import SqlStore
from pfhjem_msg.store.schema import MIGRATIONS
from pfhjem_msg.store.sql import POSTGRESQL, Cursor, Db, Row, returning_id
from pfhjem_msg.store.url import MASK, masked, secrets_in

T = TypeVar("T")
log = get_logger("pfhjem_msg.store")

APPLICATION = "pfhjem-msg"
MIGRATION_LOCK = 0x70666A6D
"""The advisory lock key held while the schema is checked and migrated ("pfjm")."""
POOL_SIZE = 4
CONNECT_TIMEOUT = 10
"""Seconds a new connection may take: a server that does not answer is not waited for."""
WAIT_FOR_CONNECTION = 10.0
"""Seconds a transaction waits for a pooled connection while the store works ..."""
WAIT_WHILE_DOWN = 2.0
"""... and while it is known to be down: callers (an SMTP client) hear "try again" soon."""
RECONNECT_SECONDS = 10.0
"""The pool gives up a connection it cannot make within this; the next transaction asks for
a fresh attempt at once, so the store is back soon after the database, however long it was
away (the pool's own back-off would otherwise grow to minutes)."""
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Seconds between attempts while the store is down: meanwhile every call fails at once, so
the daemon neither hammers the server nor blocks its SMTP intake."""
SESSION_DEFAULTS = {
    "lock_timeout": "10s",
    "statement_timeout": "5min",
    "idle_in_transaction_session_timeout": "5min",
}
"""For a session whose URL sets no ``options``: a row locked by another session (an operator's
psql) fails the statement after 10 s, and the daemon tries again later, instead of stalling;
a runaway statement ends. ``?options=-c%20lock_timeout%3D30s`` in the URL replaces them all."""
CONNECTION_DEFAULTS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
    "application_name": APPLICATION,
}
"""A connection whose peer vanished (a network cut, a failed-over host) is found dead within
about a minute, not after the kernel's quarter of an hour of retransmissions. Each applies
only when the URL does not set it."""

logging.getLogger("psycopg").setLevel(logging.ERROR)
"""psycopg's pool logs each lost connection and failed attempt in its own words (plain text
on stderr, many lines an outage); the store says it once, in the daemon's log format."""


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s``, every literal ``%`` doubled (``LIKE 'x%'``).

    A ``?`` inside a string literal, a quoted name or a comment is text, not a placeholder
    (dollar quoting and ``E''`` escapes are not understood: the store's statements use neither):
    replacing it would shift every later argument onto the wrong column (or fail with a count
    that does not match). Only the store's own statements come here; whatever an operator or
    a message supplies travels as an argument."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == c:
                    if end + 1 < n and sql[end + 1] == c:  # '' or "" inside: still quoted
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i : end + 1].replace("%", "%%"))
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif c == "?":
            out.append("%s")
            i += 1
        elif c == "%":
            out.append("%%")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


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


def _failure(where: str, exc: PoolTimeout | psycopg.Error, scrub: Callable[[str], str]) -> StoreError:
    """``StoreUnavailable`` when the server cannot be reached, has no connection to spare, or
    a statement waited too long (it may pass), ``StoreError`` for what the server refused."""
    if isinstance(exc, PoolTimeout):
        return StoreUnavailable(
            f"the store {where} has no free connection: PostgreSQL does not answer, or is "
            "overloaded; check it; the daemon tries again by itself"
        )
    if isinstance(exc, pg_errors.LockNotAvailable | pg_errors.QueryCanceled):
        return StoreUnavailable(
            f"the store {where} did not answer in time ({_primary(exc, scrub)}): another session holds "
            "the rows (an operator's open psql transaction?) or the server is overloaded; "
            "the daemon tries again by itself; see pg_stat_activity"
        )
    if isinstance(exc, pg_errors.DeadlockDetected | pg_errors.SerializationFailure):
        # The server rolled this transaction back to let another go on: nothing was written,
        # the server is well, and the same work done again succeeds.
        return StoreError(
            f"the store {where} rolled back a transaction that conflicted with another session's "
            f"(SQLSTATE {exc.sqlstate}); nothing was written: try again"
        )
    if isinstance(exc, psycopg.OperationalError):
        return StoreUnavailable(
            f"the store {where} cannot be reached ({_primary(exc, scrub)}); check that PostgreSQL runs "
            "and [store] url; the daemon tries again by itself"
        )
    return StoreError(
        f"the store {where} failed: {_primary(exc, scrub)} (SQLSTATE {exc.sqlstate or '-'}); "
        "try again, and report it if it stays"
    )


VALUE_QUOTING = ("22", "23")
"""SQLSTATE classes (data exceptions, integrity violations) whose messages may quote a value
from the row (``invalid input syntax for type ...: "..."``): shown by constraint and table
name only."""


def _primary(exc: psycopg.Error, scrub: Callable[[str], str]) -> str:
    """The server's primary message, never its DETAIL lines (they may quote row values: a
    fødselsnummer, a payload), and no message at all for the classes that quote values in the
    primary one; anything from the URL's password masked."""
    state = exc.sqlstate or ""
    if state[:2] in VALUE_QUOTING:
        diag = exc.diag
        names = ", ".join(
            f"{what} {name}"
            for what, name in (("constraint", diag.constraint_name), ("table", diag.table_name),
                               ("column", diag.column_name))
            if name
        )  # fmt: skip
        return f"{type(exc).__name__}{' on ' + names if names else ''}"
    text = exc.diag.message_primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return scrub(text.strip())[:300]


class Health:
    """Whether the store answers, as the daemon sees it: one log line when it stops, one when
    it is back, ``pfhjem_store_available`` for the metrics, and a back-off meanwhile.

    A connection that breaks under a statement (the server killed it, restarted, failed over)
    is only a warning, at most once a minute: the pool hands out a checked one next time. The
    store is *down* when no working connection can be had, or after three broken in a row."""

    LOST_IN_A_ROW = 3

    def __init__(self, where: str) -> None:
        self.where = where
        self._lock = threading.Lock()
        self.failures = 0
        """Failed attempts since the store went down; 0 while it answers."""
        self.lost = 0
        """Connections broken in a row under a statement."""
        self.down_since: float | None = None
        """When (wall clock) the store went down; None while it answers."""
        self.reason = ""
        self._retry_at = 0.0
        self._logged: dict[str, float] = {}

    def check(self) -> None:
        """Fail at once while the back-off lasts (nothing is asked of the server)."""
        with self._lock:
            if self.down_since is None or time.monotonic() >= self._retry_at:
                return
            since, reason = self.down_since, self.reason
        raise StoreUnavailable(
            f"the store {self.where} is unavailable since "
            f"{time.strftime('%H:%M:%S', time.gmtime(since))} UTC ({reason}); nothing was stored "
            "or changed now; the daemon tries again by itself"
        )

    @property
    def down(self) -> bool:
        return self.failures > 0

    def _seldom(self, event: str) -> bool:
        """True at most once a minute per event: a storm of them is one line."""
        now = time.monotonic()
        if now - self._logged.get(event, -60.0) < 60:
            return False
        self._logged[event] = now
        return True

    def failed(self, kind: str, reason: str, began: float) -> None:
        """``kind``: "busy" (a lock wait or a slow statement), "lost" (a connection broke
        under a statement) or "down" (no working connection could be had); ``began``: when
        (wall clock) the failed call began: the outage is at least that old."""
        with self._lock:
            if kind == "busy":
                if self._seldom("busy"):
                    log.warning("store.slow", store=self.where, reason=reason,
                                action="the daemon tries again; see pg_stat_activity for the session "
                                       "holding the rows")  # fmt: skip
                return
            if kind == "lost":
                self.lost += 1
                if self.lost < self.LOST_IN_A_ROW and not self.failures:
                    if self._seldom("lost"):
                        log.warning("store.connection_lost", store=self.where, reason=reason,
                                    action="the next transaction takes another connection")  # fmt: skip
                    return
            self.failures += 1
            self.reason = reason
            self._retry_at = time.monotonic() + BACKOFF[min(self.failures, len(BACKOFF)) - 1]
            if self.failures > 1:
                return
            self.down_since = began
        metrics.store_available.set(0)
        log.error("store.unavailable", store=self.where, reason=reason,
                  action="nothing is acknowledged meanwhile (SMTP answers 451, spool files wait); the "
                         "daemon tries again by itself; check PostgreSQL and the network to it")  # fmt: skip

    def worked(self) -> None:
        if not (self.failures or self.lost):
            return
        with self._lock:
            failures, since = self.failures, self.down_since
            self.failures, self.lost, self.down_since, self.reason = 0, 0, None, ""
        if failures:
            metrics.store_available.set(1)
            log.info("store.recovered", store=self.where,
                     seconds_unavailable=round(time.time() - since, 1) if since else None)  # fmt: skip


class PostgresBackend:
    """The store's rows in one PostgreSQL database."""

    dialect = POSTGRESQL

    def __init__(self, url: str, *, create: bool = True, pool_size: int = POOL_SIZE) -> None:
        """``create``: the daemon's opening: an empty database gets the schema, an older one is
        migrated. Operator commands pass False and are told to run ``store migrate``."""
        self.url = url
        self.where = masked(url)
        self._secrets = secrets_in(url)
        self.health = Health(self.where)
        self.pool_size = pool_size
        self.schema = "public"
        """Where the store's tables are (``_why_not`` finds it before the pool opens)."""
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs=self._connection_kwargs(),
            configure=self._configure,
            open=False,
            name="pfhjem-store",
            timeout=WAIT_FOR_CONNECTION,
            reconnect_timeout=RECONNECT_SECONDS,
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
        metrics.store_available.set(1)

    def _connection_kwargs(self) -> dict[str, Any]:
        """What each connection is opened with: the URL's own parameters win."""
        try:
            given = conninfo_to_dict(self.url)
        except psycopg.Error:
            given = {}  # _why_not says what is wrong with it
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": _rows}
        kwargs.update({k: v for k, v in CONNECTION_DEFAULTS.items() if k not in given})
        if psycopg.pq.version() < 120000:  # a system libpq older than 12 does not know it
            kwargs.pop("tcp_user_timeout", None)
        if "options" not in given:
            kwargs["options"] = " ".join(f"-c {k}={v}" for k, v in SESSION_DEFAULTS.items())
        return kwargs

    def scrub(self, text: str) -> str:
        """``text`` with anything secret from the URL masked (libpq quotes a URL it cannot
        parse, password and all)."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def _why_not(self) -> str | None:
        """Why a connection fails, in the server's or the network's words, at once (the pool
        would retry until its timeout and then only say that it timed out); None: it works.
        Notes the schema the store lives in (or will be made in), which every connection then
        uses alone: a table of the same name in another schema earlier in ``search_path``
        (another application's, or a trap) is never read or written."""
        try:
            with psycopg.connect(self.url, **{**self._connection_kwargs(), "row_factory": None}) as conn:
                row = conn.execute(
                    "SELECT coalesce((SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE c.oid = to_regclass('pfhjem_meta')), current_schema())"
                ).fetchone()
        except psycopg.Error as exc:
            text = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            return self.scrub(text[-1]) if text else type(exc).__name__
        if row is None or row[0] is None:
            raise StoreError(
                f"the store {self.where} has no schema to live in: no schema of the user's search_path "
                "exists; create one the user owns (CREATE SCHEMA pfhjem AUTHORIZATION ...) or set search_path"
            )
        self.schema = str(row[0])
        return None

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(pg_sql.SQL("SET search_path TO {}, pg_temp").format(pg_sql.Identifier(self.schema)))

    # -- the schema --------------------------------------------------------------------------

    def _check_and_migrate(self, migrate: bool) -> tuple[int, int]:
        def work(db: Db) -> tuple[int, int]:
            # Another daemon may be migrating a large store meanwhile: wait for it, however long.
            db.execute("SET LOCAL lock_timeout = 0")
            db.execute("SET LOCAL statement_timeout = 0")
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
                first = "" if version == 0 else "stop every daemon on it, "
                raise StoreError(
                    f"the store {self.where} {what}: {first}run `pfhjem-msg store migrate --config FILE` "
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
        self.health.check()
        began = time.time()
        try:
            with self._connection() as conn, conn.transaction():
                # Both ways, whatever the server, database or role default is: a durable commit
                # (intake, deliveries, operator changes) must be flushed when it returns even
                # where an administrator turned synchronous_commit off for speed.
                conn.execute(f"SET LOCAL synchronous_commit = {'on' if durable else 'off'}")
                result = work(PgDb(conn))
        except (PoolTimeout, psycopg.Error) as exc:
            raise self._failed(exc, began) from None
        self.health.worked()
        return result

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        self.health.check()
        began = time.time()
        try:
            with self._connection() as conn:
                rows: list[Row] = conn.execute(translate(sql), tuple(args)).fetchall()
        except (PoolTimeout, psycopg.Error) as exc:
            raise self._failed(exc, began) from None
        self.health.worked()
        return rows

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection that answered a ping just now. A dead one (the server killed
        it, restarted, failed over) is handed back, which drops it and starts a new one, and
        the next is tried at once: the pool's own check would sleep a growing back-off between
        tries, and under repeated kills every connection waiting that long is dead again."""
        timeout = WAIT_WHILE_DOWN if self.health.down else WAIT_FOR_CONNECTION
        for attempt in range(self.pool_size + 1):
            with self._pool.connection(timeout=timeout) as conn:
                try:
                    ConnectionPool.check_connection(conn)
                except psycopg.OperationalError:
                    if attempt == self.pool_size:
                        raise
                    continue
                yield conn
                return

    def _failed(self, exc: PoolTimeout | psycopg.Error, began: float) -> StoreError:
        """The error to raise (its cause is dropped: psycopg's text may quote the URL or row
        values, and a traceback would show it), noted in the store's health."""
        error = _failure(self.where, exc, self.scrub)
        if isinstance(exc, PoolTimeout):
            self.health.failed("down", "no working connection: the server does not answer, or refuses", began)
        elif isinstance(exc, pg_errors.LockNotAvailable | pg_errors.QueryCanceled):
            self.health.failed("busy", _primary(exc, self.scrub), began)
        elif isinstance(exc, pg_errors.DeadlockDetected | pg_errors.SerializationFailure):
            pass  # the server is well: a conflict, not an outage
        elif isinstance(exc, psycopg.OperationalError):
            self.health.failed("lost", _primary(exc, self.scrub), began)
        return error

    def size(self) -> int:
        return int(self.read("SELECT pg_database_size(current_database())")[0][0])

    def compact(self) -> None:
        """Mark what pruning freed as reusable now rather than at autovacuum's next turn. Plain
        VACUUM gives little back to the file system; VACUUM FULL would lock the tables while the
        daemon runs, and is left to the database's administrator."""
        try:
            with self._pool.connection() as conn:
                conn.execute("SET statement_timeout = 0")  # as long as it takes; it blocks no one
                try:
                    conn.execute("VACUUM (ANALYZE) raw, deliveries, events, messages")
                finally:
                    conn.execute("RESET statement_timeout")
        except (PoolTimeout, psycopg.Error) as exc:
            log.warning("store.vacuum_failed", store=self.where, error=type(exc).__name__)

    @contextlib.contextmanager
    def advisory_lock(self, key1: int, key2: int) -> Iterator[bool]:
        """A session-level advisory lock on a connection taken from the pool for the block:
        whoever else asks for the same keys meanwhile gets False. It is released before the
        connection goes back to the pool, and by the server if this process dies."""
        self.health.check()
        began = time.time()
        with contextlib.ExitStack() as stack:
            try:
                conn = stack.enter_context(self._connection())
                got = conn.execute("SELECT pg_try_advisory_lock(%s::int4, %s::int4)", (key1, key2)).fetchone()
            except (PoolTimeout, psycopg.Error) as exc:
                raise self._failed(exc, began) from None
            held = bool(got and got[0])
            try:
                yield held
            finally:
                if held:
                    with contextlib.suppress(psycopg.Error):  # a broken connection has lost it anyway
                        conn.execute("SELECT pg_advisory_unlock(%s::int4, %s::int4)", (key1, key2))

    def close(self) -> None:
        self._pool.close()


class PostgresStore(SqlStore):
    """Every store protocol over one PostgreSQL database."""

    def __init__(self, url: str, *, create: bool = True, pool_size: int = POOL_SIZE) -> None:
        """``create``: the daemon's opening (the schema made or migrated when needed). Operator
        commands pass False: a database without the current schema is refused with what to do."""
        self.backend = PostgresBackend(url, create=create, pool_size=pool_size)
        super().__init__(self.backend)
