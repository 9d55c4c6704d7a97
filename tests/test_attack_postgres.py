"""Attacks on the PostgreSQL store: placeholder translation, secrets and patient data in error
texts, large originals, ``store copy`` against a moving or mismatched source, a user without
CREATE rights, a ``search_path`` that puts another ``messages`` table first, and a row locked
by another session. Real PostgreSQL; each test makes its own database."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from pfhjem_msg.errors import StoreError, StoreUnavailable
from pfhjem_msg.store.base import MessageFilter
from pfhjem_msg.store.postgres import PostgresStore, translate
from pfhjem_msg.store.sqlite import SqliteStore
from pfhjem_msg.store.url import masked
from tests.conftest import ROOT, SAMPLES, write_config
from tests.store_backends import PgServer

pytestmark = pytest.mark.slow

NOW = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
FNR = "01017012345"
"""A fødselsnummer-shaped value that must never reach an error text."""


def _psql(url: str, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, args)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def _with(url: str, *, user: str | None = None, password: str | None = None, query: str = "") -> str:
    parts = urlsplit(url)
    name = user or parts.username or "postgres"
    netloc = f"{name}{':' + password if password else ''}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pfhjem_msg", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip


# -- the placeholder translation -----------------------------------------------------------------


def test_question_marks_and_percents_in_literals_are_text_not_placeholders() -> None:
    assert (
        translate("SELECT 'a?b%' WHERE x = ? AND y LIKE 'r%'")
        == "SELECT 'a?b%%' WHERE x = %s AND y LIKE 'r%%'"
    )
    assert translate("SELECT 'it''s?' , \"odd?name\" FROM t WHERE a = ?") == (
        "SELECT 'it''s?' , \"odd?name\" FROM t WHERE a = %s"
    )
    assert translate("SELECT ? -- who?\n, ? /* why? 5% */") == "SELECT %s -- who?\n, %s /* why? 5%% */"


def test_literals_and_operator_text_reach_the_server_intact(pg_server: PgServer) -> None:
    store = PostgresStore(pg_server.fresh())
    try:
        rows = store.backend.read("SELECT 'a?b%', ?, 'c''?', ? LIKE 'x%'", ("?%'", "x?%"))
        assert tuple(rows[0]) == ("a?b%", "?%'", "c'?", True)
        hostile = "8300001' OR '1'='1?%"
        assert store.list_messages(MessageFilter(sender=hostile, msg_type="?%")) == []
        store.audit("operator?%'", "note", None, f"reason with ? and % and ' {hostile}", NOW)
        entry = store.audit_entries(None)[-1]
        assert entry.actor == "operator?%'" and hostile in entry.detail
    finally:
        store.close()


# -- what error texts may say -----------------------------------------------------------------


def test_a_password_libpq_quotes_is_masked(tmp_path: Path) -> None:
    """libpq quotes a URL it cannot parse, password and all; the store says what is wrong
    without it, in the command's output and in ``config show``."""
    url = "postgresql://pf:bad%zzSECRETword@127.0.0.1:1/pf"
    with pytest.raises(StoreError) as caught:
        PostgresStore(url)
    assert "SECRETword" not in str(caught.value) and "********" in str(caught.value)
    config = write_config(tmp_path, extra=f'[store]\nurl = "{url}"\n')
    result = _cli("messages", "list", "--config", str(config), cwd=tmp_path)
    assert result.returncode in (2, 75) and "SECRETword" not in result.stdout + result.stderr
    shown = _cli("config", "show", "--config", str(config), cwd=tmp_path)
    assert "SECRETword" not in shown.stdout + shown.stderr


def test_a_password_given_as_a_query_parameter_is_refused_and_never_shown(tmp_path: Path) -> None:
    """The configuration refuses ``?password=``; should one reach the store by another way,
    ``masked`` hides it too."""
    url = "postgresql://pf@127.0.0.1:1/pf?sslmode=disable&password=QuerySECRET"
    assert "QuerySECRET" not in masked(url) and "password=********" in masked(url)
    config = write_config(tmp_path, extra=f'[store]\nurl = "{url}"\n')
    for command in (("status",), ("run", "--once"), ("config", "show"), ("config", "check")):
        result = _cli(*command, "--config", str(config), cwd=tmp_path)
        assert result.returncode in (1, 2) and "store.url" in result.stdout + result.stderr, command
        assert "QuerySECRET" not in result.stdout + result.stderr


def test_server_errors_never_quote_row_values(pg_server: PgServer) -> None:
    """A constraint violation's DETAIL and a data error's primary message quote the value; the
    store's error names the constraint or the class only."""
    store = PostgresStore(pg_server.fresh())
    try:
        store.backend.run(lambda db: db.execute("CREATE TABLE probe (v TEXT PRIMARY KEY)"))
        store.backend.run(lambda db: db.execute("INSERT INTO probe VALUES (?)", (FNR,)))
        with pytest.raises(StoreError) as duplicate:
            store.backend.run(lambda db: db.execute("INSERT INTO probe VALUES (?)", (FNR,)))
        assert FNR not in str(duplicate.value) and "probe_pkey" in str(duplicate.value)
        with pytest.raises(StoreError) as cast:
            store.backend.read("SELECT CAST(? AS integer)", (f"{FNR} Kari Nordmann",))
        assert FNR not in str(cast.value) and "Nordmann" not in str(cast.value)
        assert "22P02" in str(cast.value)
        assert cast.value.__cause__ is None  # no psycopg text in a traceback either
    finally:
        store.close()


# -- large originals ----------------------------------------------------------------------------


def test_an_8_mb_original_is_stored_and_read_back_as_bytes(pg_server: PgServer, tmp_path: Path) -> None:
    store = PostgresStore(pg_server.fresh())
    big = (SAMPLES / "dlg11-marked-tema.xml").read_bytes()
    big = big.replace(b"</MsgHead>", b"<!--" + os.urandom(4 * 1024 * 1024).hex().encode() + b"--></MsgHead>")
    assert len(big) > 8 * 1024 * 1024
    try:
        accepted = store.accept(big, "spool:big.xml", NOW)
        again = store.accept(big, "spool:big-again.xml", NOW)
        assert again.message_id == accepted.message_id and not again.new
        back = store.raw(accepted.message_id)
        assert type(back) is bytes and back == big
    finally:
        store.close()


# -- store copy ---------------------------------------------------------------------------------


def _sqlite_with(path: Path, count: int, start: int = 0) -> None:
    store = SqliteStore(path)
    seed = (SAMPLES / "dlg11-unmarked.xml").read_bytes()
    try:
        for i in range(start, start + count):
            store.accept(seed + f"<!-- {i} -->".encode(), f"spool:{i}.xml", NOW)
    finally:
        store.close()


def test_copy_of_a_file_being_written_then_again_takes_the_rest(pg_server: PgServer, tmp_path: Path) -> None:
    """A copy while the daemon still writes the file is one consistent snapshot; a second copy
    (after the daemon stopped) adds what came since and verifies; nothing is doubled."""
    url = pg_server.fresh()
    source = tmp_path / "var" / "pfhjem-msg.sqlite3"
    _sqlite_with(source, 30)
    config = write_config(tmp_path, extra=f'[store]\nurl = "{url}"\n')
    assert _cli("store", "migrate", "--config", str(config), cwd=tmp_path).returncode == 0
    writing = threading.Thread(target=_sqlite_with, args=(source, 40, 30))
    writing.start()
    first = _cli("store", "copy", "--from", str(source), "--config", str(config), cwd=tmp_path)
    writing.join()
    assert first.returncode == 0, first.stderr
    copied = _psql(url, "SELECT count(*) FROM messages")[0][0]
    assert isinstance(copied, int) and 30 <= copied <= 70
    second = _cli("store", "copy", "--from", str(source), "--config", str(config), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert _psql(url, "SELECT count(*), count(DISTINCT sha256) FROM raw") == [(70, 70)]
    third = _cli("store", "copy", "--from", str(source), "--config", str(config), cwd=tmp_path)
    assert third.returncode == 0 and _psql(url, "SELECT count(*) FROM messages") == [(70,)]


def test_copy_into_a_target_with_the_same_ids_but_other_content_is_refused(
    pg_server: PgServer, tmp_path: Path
) -> None:
    url = pg_server.fresh()
    source = tmp_path / "var" / "pfhjem-msg.sqlite3"
    _sqlite_with(source, 5)
    other = PostgresStore(url)
    seed = (SAMPLES / "dlg11-marked-tema.xml").read_bytes()
    for i in range(5):  # another installation's messages, with ids 1..5
        other.accept(seed + f"<!-- other {i} -->".encode(), f"spool:o{i}.xml", NOW)
    other.close()
    before = _psql(url, "SELECT id, sha256 FROM raw ORDER BY id")
    config = write_config(tmp_path, extra=f'[store]\nurl = "{url}"\n')
    result = _cli("store", "copy", "--from", str(source), "--config", str(config), cwd=tmp_path)
    assert (
        result.returncode != 0
        and "not this file's" in result.stderr
        and "nothing was copied" in result.stderr
    )
    assert _psql(url, "SELECT id, sha256 FROM raw ORDER BY id") == before


# -- rights, search_path, locks -------------------------------------------------------------------


def test_a_user_without_create_rights_is_told_what_to_do(pg_server: PgServer, tmp_path: Path) -> None:
    url = pg_server.fresh()
    role = f"pf_nocreate_{urlsplit(url).path.rsplit('_', 2)[-2]}"
    _psql(url, f'DROP ROLE IF EXISTS "{role}"')
    _psql(url, f'CREATE ROLE "{role}" LOGIN')
    try:
        _psql(url, f'REVOKE CREATE ON SCHEMA public FROM PUBLIC, "{role}"')
        limited = _with(url, user=role)
        with pytest.raises(StoreError) as caught:
            PostgresStore(limited)
        text = str(caught.value)
        assert (
            "permission denied" in text and "42501" in text and not isinstance(caught.value, StoreUnavailable)
        )
        config = write_config(tmp_path, extra=f'[store]\nurl = "{limited}"\n')
        result = _cli("store", "migrate", "--config", str(config), cwd=tmp_path)
        assert (
            result.returncode == 2
            and "permission denied" in result.stderr
            and "Traceback" not in result.stderr
        )
        # the administrator migrates and grants the rows; the user then works without CREATE
        PostgresStore(url).close()
        _psql(url, f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"')
        _psql(url, f'GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
        store = PostgresStore(limited)
        try:
            assert store.accept(b"<x/>", "spool:a.xml", NOW).new
        finally:
            store.close()
    finally:
        _psql(url, f'DROP OWNED BY "{role}"')
        _psql(url, f'DROP ROLE "{role}"')


def test_another_messages_table_earlier_in_search_path_is_never_used(pg_server: PgServer) -> None:
    url = pg_server.fresh()
    PostgresStore(url).close()  # the store in public
    _psql(url, "CREATE SCHEMA trap")
    _psql(url, "CREATE TABLE trap.messages (LIKE public.messages INCLUDING ALL)")
    _psql(url, "CREATE TABLE trap.raw (LIKE public.raw INCLUDING ALL)")
    database = urlsplit(url).path.lstrip("/")
    _psql(url, f'ALTER DATABASE "{database}" SET search_path = trap, public')
    store = PostgresStore(url)
    try:
        accepted = store.accept(b"<x/>", "spool:a.xml", NOW)
        assert store.message(accepted.message_id) is not None
    finally:
        store.close()
    assert _psql(url, "SELECT count(*) FROM public.messages") == [(1,)]
    assert _psql(url, "SELECT count(*) FROM trap.messages") == [(0,)]
    assert _psql(url, "SELECT count(*) FROM trap.raw") == [(0,)]


def test_a_row_locked_by_another_session_fails_in_time_and_then_works(pg_server: PgServer) -> None:
    url = pg_server.fresh()
    default = PostgresStore(url)
    try:
        assert default.backend.read("SHOW lock_timeout")[0][0] == "10s"
        assert default.backend.read("SHOW statement_timeout")[0][0] == "5min"
        assert default.backend.read("SHOW application_name")[0][0] == "pfhjem-msg"
        message_id = default.accept(b"<x/>", "spool:a.xml", NOW).message_id
    finally:
        default.close()
    store = PostgresStore(_with(url, query="options=-c%20lock_timeout%3D1s"))
    holder = psycopg.connect(url)
    try:
        holder.execute("SELECT * FROM messages WHERE id = %s FOR UPDATE", (message_id,))  # an open psql
        outcome: list[BaseException | None] = []

        def change() -> None:
            try:
                store.audit("operator", "note", message_id, "x", NOW)  # not the row: no wait
                store.backend.run(lambda db: db.execute("UPDATE messages SET updated_at = updated_at WHERE id = ?",
                                                        (message_id,)))  # fmt: skip
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=change)
        worker.start()
        worker.join(120)
        assert not worker.is_alive(), "the store waited for the lock without end"
        assert isinstance(outcome[0], StoreUnavailable) and "did not answer in time" in str(outcome[0])
        holder.rollback()
        assert not store.backend.health.down  # a lock wait is not an outage
        assert store.message(message_id) is not None
    finally:
        holder.close()
        store.close()


def test_copy_refuses_a_file_whose_column_names_are_crafted(pg_server: PgServer, tmp_path: Path) -> None:
    """The copy writes the file's column names into its statements: a crafted file must not
    choose them (SQL in a name would run against PostgreSQL)."""
    import sqlite3

    url = pg_server.fresh()
    source = tmp_path / "var" / "pfhjem-msg.sqlite3"
    _sqlite_with(source, 3)
    with sqlite3.connect(source) as db:
        db.execute('ALTER TABLE audit ADD COLUMN "detail) VALUES (1); DROP TABLE events; --" TEXT')
    config = write_config(tmp_path, extra=f'[store]\nurl = "{url}"\n')
    assert _cli("store", "migrate", "--config", str(config), cwd=tmp_path).returncode == 0
    result = _cli("store", "copy", "--from", str(source), "--config", str(config), cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert "does not have this version's columns" in result.stderr and "nothing was copied" in result.stderr
    assert _psql(url, "SELECT to_regclass('events') IS NOT NULL, (SELECT count(*) FROM messages)") == [
        (True, 0)
    ]


def test_a_deadlock_is_a_conflict_to_retry_not_an_outage() -> None:
    """The server aborting one of two conflicting transactions says nothing about its health:
    no "cannot be reached", no exit 75 back-off, a StoreError that says to try again."""
    import psycopg.errors as pg_errors

    from pfhjem_msg.errors import StoreError, StoreUnavailable
    from pfhjem_msg.store.postgres import _failure

    for error in (pg_errors.DeadlockDetected("deadlock detected"), pg_errors.SerializationFailure("x")):
        failure = _failure("postgresql://u@h/db", error, lambda text: text)
        assert isinstance(failure, StoreError) and not isinstance(failure, StoreUnavailable)
        assert "try again" in str(failure) and "cannot be reached" not in str(failure)
