"""PostgreSQL as the store, beyond the contract suite: the configuration key, migrations
(explicit, refused when foreign or newer, not raced by daemons starting at once), ``store
copy`` from an installation's SQLite file, and one message per content when two processes
take the same bytes at once. Real PostgreSQL, real subprocesses; each test gets a database of
its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pfhjem_msg.config import effective, load
from pfhjem_msg.errors import ConfigError, StoreError
from pfhjem_msg.store.schema import MIGRATIONS
from pfhjem_msg.store.url import masked
from tests.conftest import ROOT, SAMPLES, write_config
from tests.store_backends import PgServer

VERSION = len(MIGRATIONS)

pytestmark = pytest.mark.slow


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pfhjem_msg", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip


def _spawn(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def _spawn(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pipe = subprocess.PIPE
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, stdin=pipe, stdout=pipe, stderr=pipe, text=True, env=env
    )


def _pg_config(directory: Path, url: str) -> Path:
    """The demo-like configuration of ``write_config`` with ``[store] url``."""
    return write_config(directory, extra=f'[store]\nurl = "{url}"\n')


def _psql(url: str, sql: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


def test_url_is_checked_with_its_line_and_shown_masked(tmp_path: Path) -> None:
    bad = write_config(tmp_path, extra='[store]\nurl = "mysql://db/x"\n')
    with pytest.raises(ConfigError) as caught:
        load(bad)
    text = str(caught.value)
    assert "store.url" in text and "postgresql://" in text and "line " in text
    no_db = write_config(tmp_path, extra='[store]\nurl = "postgresql://u@db:5432"\n')
    with pytest.raises(ConfigError, match="must name the database"):
        load(no_db)
    good = write_config(
        tmp_path, extra='[store]\nurl = "postgresql://pf:s3cret-word@db.example.no:5433/pf"\n'
    )
    assert load(good).store_url == "postgresql://pf:s3cret-word@db.example.no:5433/pf"
    shown = effective(good)["store"]["url"]
    assert "s3cret" not in shown and shown == "postgresql://pf:********@db.example.no:5433/pf"
    assert load(write_config(tmp_path)).store_url is None  # without it: the SQLite file
    assert masked("postgresql://u@h/db") == "postgresql://u@h/db"


def test_migrate_then_operator_commands_and_refusals(pg_server: PgServer, tmp_path: Path) -> None:
    url = pg_server.fresh()
    config = _pg_config(tmp_path, url.replace("postgres@", "postgres:never-shown@"))
    early = _cli("messages", "list", "--config", str(config), cwd=tmp_path)
    assert early.returncode == 2 and "store migrate" in early.stderr and "never-shown" not in early.stderr
    first = _cli("store", "migrate", "--config", str(config), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (
        f"schema version {VERSION} (was 0)" in first.stdout
        and "never-shown" not in first.stdout + first.stderr
    )
    again = _cli("store", "migrate", "--config", str(config), cwd=tmp_path)
    assert again.returncode == 0 and "up to date" in again.stdout
    listed = _cli("messages", "list", "--config", str(config), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    _psql(url, "UPDATE pfhjem_meta SET value = '99' WHERE key = 'schema_version'")
    newer = _cli("status", "--config", str(config), cwd=tmp_path)
    assert newer.returncode == 2 and "newer pfhjem-msg (schema 99" in newer.stderr


def test_a_foreign_database_is_refused_and_left_alone(pg_server: PgServer, tmp_path: Path) -> None:
    url = pg_server.fresh()
    _psql(url, "CREATE TABLE customers (id int)")
    result = _cli("store", "migrate", "--config", str(_pg_config(tmp_path, url)), cwd=tmp_path)
    assert (
        result.returncode == 2 and "not a pfhjem-msg store" in result.stderr and "customers" in result.stderr
    )
    assert _psql(url, "SELECT to_regclass('messages') IS NULL") == [(True,)]


def test_unreachable_server_says_what_to_check(tmp_path: Path) -> None:
    config = _pg_config(tmp_path, "postgresql://postgres:pw@127.0.0.1:1/nothing")
    for command in (("messages", "list"), ("run", "--once")):
        result = _cli(*command, "--config", str(config), cwd=tmp_path)
        # 75 (try again), not 2 (refused): a database down at boot must not leave the service stopped
        assert result.returncode == 75, (command, result.returncode)
        assert (
            "cannot connect to the store postgresql://postgres:********@127.0.0.1:1/nothing" in result.stderr
        )
        assert "check that PostgreSQL runs" in result.stderr


def test_daemons_starting_at_once_migrate_once(pg_server: PgServer, tmp_path: Path) -> None:
    url = pg_server.fresh()
    config = _pg_config(tmp_path, url)
    procs = [
        _spawn("-m", "pfhjem_msg", "store", "migrate", "--config", str(config), cwd=tmp_path)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    assert sum("(was 0)" in out for out, _ in outputs) == 1  # one migrated, the others found it done
    assert _psql(url, "SELECT value FROM pfhjem_meta WHERE key = 'schema_version'") == [(str(VERSION),)]


_ACCEPT = """
import sys
from datetime import UTC, datetime
from pfhjem_msg.store.postgres import PostgresStore
store = PostgresStore(sys.argv[1])
sys.stdin.readline()  # both processes start taking at the same moment
new = sum(store.accept(f"<m>{i}</m>".encode(), sys.argv[2], datetime.now(UTC)).new for i in range(60))
store.close()
print(new)
"""


def test_two_processes_taking_the_same_bytes_make_one_message_each(pg_server: PgServer) -> None:
    from pfhjem_msg.store.postgres import PostgresStore

    url = pg_server.fresh()
    PostgresStore(url).close()
    procs = [_spawn("-c", _ACCEPT, url, tag) for tag in ("spool:a", "smtp:b")]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum(int(out) for out, _ in outputs) == 60  # each content is new for exactly one of them
    assert _psql(url, "SELECT COUNT(*), COUNT(DISTINCT raw_id) FROM messages") == [(60, 60)]


def test_copy_moves_the_history_once_verified_and_the_copy_works(pg_server: PgServer, tmp_path: Path) -> None:
    sqlite_config = write_config(tmp_path)
    for sample in sorted(SAMPLES.glob("*.xml")):
        shutil.copy(sample, tmp_path / "var" / "inbox" / sample.name)
    ran = _cli("run", "--once", "--config", str(sqlite_config), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    sqlite_file = tmp_path / "var" / "pfhjem-msg.sqlite3"
    before = _cli("messages", "list", "--limit", "1000", "--config", str(sqlite_config), cwd=tmp_path).stdout

    url = pg_server.fresh()
    (tmp_path / "pg").mkdir()
    pg_config = _pg_config(tmp_path / "pg", url)
    copied = _cli("store", "copy", "--from", str(sqlite_file), "--config", str(pg_config), cwd=tmp_path)
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert "verified" in copied.stdout and "stored originals: the same set in both" in copied.stdout
    rows = {line.split()[0]: line.split()[1:4] for line in copied.stdout.splitlines()[1:11]}
    assert rows["messages"][0] == rows["messages"][1] == rows["messages"][2] != "0"
    assert rows["raw"][0] == rows["raw"][1]

    twice = _cli("store", "copy", "--from", str(sqlite_file.parent), "--config", str(pg_config), cwd=tmp_path)
    assert twice.returncode == 0 and "nothing to copy" in twice.stdout
    assert all(line.split()[3] == "0" for line in twice.stdout.splitlines()[1:11])

    after = _cli("messages", "list", "--limit", "1000", "--config", str(pg_config), cwd=tmp_path).stdout
    assert after == before  # the same history, ids and all
    done = next(line.split()[0] for line in after.splitlines()[1:] if " done " in line)
    shown = _cli("messages", "show", done, "--config", str(pg_config), cwd=tmp_path)
    assert shown.returncode == 0 and f"message {done}: done" in shown.stdout
    replay = _cli("messages", "replay", done, "--force-duplicate", "--reason", "after the move",
                  "--config", str(pg_config), cwd=tmp_path)  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    top = int(before.splitlines()[1].split()[0])
    assert f"→ message {top + 1}" in replay.stdout  # the identities were set past the copied ids
    ran = _cli("run", "--once", "--config", str(pg_config), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert _psql(url, f"SELECT state, replay_of FROM messages WHERE id = {top + 1}") == [("done", int(done))]

    again = _cli("store", "copy", "--from", str(sqlite_file), "--config", str(pg_config), cwd=tmp_path)
    assert again.returncode == 1 and "nothing was copied" in again.stderr
    assert "messages: 1 row(s) the file does not have" in again.stderr and "empty database" in again.stderr


def test_copy_refuses_a_sqlite_file_that_is_not_a_store(pg_server: PgServer, tmp_path: Path) -> None:
    (tmp_path / "pg").mkdir()
    config = _pg_config(tmp_path / "pg", pg_server.fresh())
    (tmp_path / "state").mkdir(mode=0o700)
    other = tmp_path / "state" / "other.sqlite3"
    import sqlite3

    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    result = _cli("store", "copy", "--from", str(other), "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2 and "not a pfhjem-msg store" in result.stderr
    missing = _cli(
        "store", "copy", "--from", str(tmp_path / "nope.sqlite3"), "--config", str(config), cwd=tmp_path
    )
    assert missing.returncode == 2 and "no SQLite store" in missing.stderr
    sqlite_only = write_config(tmp_path)
    needs_url = _cli("store", "copy", "--from", str(other), "--config", str(sqlite_only), cwd=tmp_path)
    assert needs_url.returncode == 2 and "[store] url" in needs_url.stderr


def test_store_error_names_the_store_without_password() -> None:
    from pfhjem_msg.store.postgres import PostgresStore

    with pytest.raises(StoreError) as caught:
        PostgresStore("postgresql://postgres:hunter2@127.0.0.1:1/x")
    assert "hunter2" not in str(caught.value) and "********" in str(caught.value)


def test_migrate_on_the_sqlite_store_reports_its_version(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    made = _cli("store", "migrate", "--create", "--config", str(config), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert (
        str(tmp_path / "var" / "pfhjem-msg.sqlite3") in made.stdout
        and f"schema version {VERSION}" in made.stdout
    )
    again = _cli("store", "migrate", "--config", str(config), cwd=tmp_path)
    assert again.returncode == 0 and "up to date" in again.stdout


def test_store_migrate_is_refused_while_daemons_run_on_the_store(pg_server: PgServer, tmp_path: Path) -> None:
    from pfhjem_msg.daemon import Daemon

    url = pg_server.fresh()
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    config = _pg_config(first_dir, url)
    first = Daemon(load(config))
    second = Daemon(load(_pg_config(second_dir, url)))
    try:
        refused = _cli("store", "migrate", "--config", str(config), cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert "2 daemon(s) run on the store" in refused.stderr and "stop every daemon" in refused.stderr
        assert first.id in refused.stderr and second.id in refused.stderr
        # a daemon whose connection broke (the server restarted, say) is seen again after its next check
        _psql(url, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
                   f"'pfhjem-msg daemon {first.id}'")  # fmt: skip
        second.close()
        assert _cli("store", "migrate", "--config", str(config), cwd=tmp_path).returncode == 0
        assert first.presence is not None
        first.presence.keep()
        again = _cli("store", "migrate", "--config", str(config), cwd=tmp_path)
        assert (
            again.returncode == 2
            and f"1 daemon(s) run on the store {masked(url)} ({first.id})" in again.stderr
        )
    finally:
        first.close()
    done = _cli("store", "migrate", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0 and "up to date" in done.stdout, done.stderr


def test_durable_commits_are_durable_whatever_the_database_default(pg_server: PgServer) -> None:
    """A database (or role) set to ``synchronous_commit = off`` must not make intake
    acknowledge what a crash of the server would lose: durable transactions set it on."""
    import psycopg

    from pfhjem_msg.store.postgres import PostgresStore

    url = pg_server.fresh()
    with psycopg.connect(url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    store = PostgresStore(url)
    try:
        durable = store.backend.run(lambda db: db.execute("SHOW synchronous_commit").fetchone()[0])
        derived = store.backend.run(
            lambda db: db.execute("SHOW synchronous_commit").fetchone()[0], durable=False
        )
        assert (durable, derived) == ("on", "off")
    finally:
        store.close()
