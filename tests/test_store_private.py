"""The store is private and never silently replaced: attacks and accidents on the state
directory, with real files, a real SQLite store and the real ``pfhjem-msg run`` command."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pfhjem_msg.errors import StoreError
from pfhjem_msg.store import open_store, schema, sqlite_file
from pfhjem_msg.store.schema import MIGRATIONS
from pfhjem_msg.store.sqlite import SqliteStore
from pfhjem_msg.store.sqlite_file import APPLICATION_ID
from tests.conftest import ROOT, write_config

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _run_once(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def umask_0022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _filled(path: Path, messages: int = 40) -> None:
    store = SqliteStore(path)
    store.accept_many([(b"<MsgHead>" + bytes([i]) * 3000 + b"</MsgHead>", f"test:{i}") for i in range(messages)],
                      NOW)  # fmt: skip
    store.close()


def test_0644_umask_still_makes_store_wal_and_directory_private(tmp_path: Path, umask_0022: None) -> None:
    state = tmp_path / "state"
    store = open_store(state)
    store.accept(b"<MsgHead/>", "test", NOW)  # the -wal and -shm files exist while it is open
    modes = {p.name: p.stat().st_mode & 0o777 for p in state.iterdir()}
    store.close()
    assert (state.stat().st_mode & 0o777) == 0o700
    assert modes == {
        "pfhjem-msg.sqlite3": 0o600,
        "pfhjem-msg.sqlite3-wal": 0o600,
        "pfhjem-msg.sqlite3-shm": 0o600,
    }


def test_0644_umask_existing_state_directory_and_store_readable_by_others_warn(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert _run_once(config).returncode == 0
    db = tmp_path / "var" / "pfhjem-msg.sqlite3"
    os.chmod(tmp_path / "var", 0o755)
    os.chmod(db, 0o644)
    result = _run_once(config)
    assert result.returncode == 0, result.stderr
    assert f"chmod 600 {db}" in result.stderr and f"chmod 700 {tmp_path / 'var'}" in result.stderr
    assert "store.created" not in result.stderr


def test_new_store_is_made_only_where_there_is_none_and_said_so(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    first = _run_once(config)
    assert first.returncode == 0 and "store.created" in first.stderr
    second = _run_once(config)
    assert second.returncode == 0 and "store.created" not in second.stderr
    db = sqlite3.connect(tmp_path / "var" / "pfhjem-msg.sqlite3")
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    db.close()
    assert not [p for p in (tmp_path / "var").iterdir() if ".new-" in p.name]


def test_zero_length_store_is_refused_not_replaced(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    db = tmp_path / "var" / "pfhjem-msg.sqlite3"
    db.write_bytes(b"")
    result = _run_once(config)
    assert result.returncode == 2, result.stderr
    assert (
        "is damaged (it is empty, 0 bytes)" in result.stderr and "restore it from a backup" in result.stderr
    )
    errors = [line for line in result.stderr.splitlines() if not line.startswith("{")]  # not the log lines
    assert "Traceback" not in result.stderr and len(errors) == 1
    assert db.stat().st_size == 0 and not db.with_name(db.name + "-wal").exists()


def test_corrupt_store_is_refused_not_replaced(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    db = tmp_path / "var" / "pfhjem-msg.sqlite3"
    _filled(db)
    with db.open("r+b") as f:  # a torn write: garbage over pages in the middle of the file
        f.seek(4096 * 3)
        f.write(os.urandom(4096 * 6))
    before = _digest(db)
    result = _run_once(config)
    assert result.returncode == 2, result.stderr
    assert "is damaged" in result.stderr and "move it aside" in result.stderr
    assert "Traceback" not in result.stderr
    assert _digest(db) == before


def test_corrupt_store_header_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "pfhjem-msg.sqlite3"
    _filled(db)
    with db.open("r+b") as f:
        f.seek(16)
        f.write(b"\xff" * 84)  # the SQLite magic stays, the rest of the header is garbage
    with pytest.raises(StoreError, match="is damaged"):
        SqliteStore(db)
    with pytest.raises(StoreError, match="is damaged"):
        SqliteStore(db, create=False)  # the operator commands refuse it too


def test_foreign_sqlite_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    db = tmp_path / "var" / "pfhjem-msg.sqlite3"
    other = sqlite3.connect(db)
    other.execute("CREATE TABLE contacts (name TEXT)")
    other.execute("INSERT INTO contacts VALUES ('x')")
    other.commit()
    other.close()
    before = _digest(db)
    result = _run_once(config)
    assert result.returncode == 2 and "is not a pfhjem-msg store" in result.stderr, result.stderr
    assert "check state_dir" in result.stderr and "Traceback" not in result.stderr
    assert _digest(db) == before


def test_a_text_file_in_place_of_the_store_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "pfhjem-msg.sqlite3"
    db.write_text("state_dir = '/var/lib/pfhjem-msg'\n", encoding="utf-8")
    with pytest.raises(StoreError, match=r"not a pfhjem-msg store \(it is not a SQLite database"):
        SqliteStore(db)
    assert db.read_text(encoding="utf-8").startswith("state_dir")


def test_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "pfhjem-msg.sqlite3"
    _filled(db, 1)
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    raw.close()
    with pytest.raises(StoreError, match="made by a newer pfhjem-msg"):
        SqliteStore(db)


def test_store_made_before_the_application_id_is_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "pfhjem-msg.sqlite3"
    with monkeypatch.context() as m:  # made by the version before refused files were recorded
        m.setattr(schema, "MIGRATIONS", MIGRATIONS[:5])
        m.setattr(sqlite_file, "MIGRATIONS", MIGRATIONS[:5])
        _filled(db, 3)
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA application_id=0")
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 5
    raw.close()
    store = SqliteStore(db)
    assert store.counts() == {"received": 3}
    assert store.record_refused("spool", "x.xml", "symlink", None, NOW) == 1
    store.close()
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    raw.close()


def test_refused_files_are_noted_once_and_acknowledged_with_an_audit_entry(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    first = store.record_refused("spool", "a.xml", "too_large", 99_000_000, NOW)
    assert store.record_refused("spool", "a.xml", "too_large", 99_000_000, NOW) == first
    store.record_refused("spool", "b.xml", "symlink", None, NOW)
    assert [(r.name, r.reason, r.size) for r in store.refused_files()] == [
        ("b.xml", "symlink", None),
        ("a.xml", "too_large", 99_000_000),
    ]
    assert store.acknowledge_refused("ops:test", NOW) == 2
    assert store.refused_files() == [] and len(store.refused_files(acknowledged=True)) == 2
    assert [e.action for e in store.audit_entries(None)] == ["acknowledge refused"]
    columns = {r[1] for r in store._db.execute("PRAGMA table_info(refused)")}
    assert not columns & {"bytes", "content", "payload"}
    store.close()


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pfhjem_msg", *args, "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip


def _old_sqlite_store(path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """A store as the version before typed deliveries made it (migration 8 is not additive)."""
    from pfhjem_msg.store.delivery_columns import typed_deliveries

    typed = schema.MIGRATIONS.index(typed_deliveries)
    with monkeypatch.context() as m:
        for module in (schema, sqlite_file):
            m.setattr(module, "MIGRATIONS", schema.MIGRATIONS[:typed])
        SqliteStore(path).close()  # the running daemon's version made it
    return typed


def _version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


# An operator command of a new version, run after the package upgrade and before the daemon's
# restart, must not migrate the store under the old daemon: whose delivery inserts would then
# fail, and whose messages would end failed without an AppRec.
def test_an_operator_command_does_not_migrate_the_sqlite_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.sqlite3"
    typed = _old_sqlite_store(path, monkeypatch)
    with pytest.raises(StoreError, match=r"stop the daemon, run `pfhjem-msg store migrate"):
        SqliteStore(path, create=False).close()  # e.g. `pfhjem-msg status` of the new version
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == typed


def test_store_migrate_waits_for_the_daemon_to_stop_and_commands_refuse_until_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pfhjem_msg.lock import StoreLock

    config = write_config(tmp_path)
    path = tmp_path / "var" / "pfhjem-msg.sqlite3"
    typed = _old_sqlite_store(path, monkeypatch)
    status = _cli(config, "status")
    assert status.returncode == 2 and "pfhjem-msg store migrate" in status.stderr, status.stderr
    assert _version(path) == typed
    daemon = StoreLock.acquire(path.parent)  # the old daemon, still running
    try:
        refused = _cli(config, "store", "migrate")
        assert refused.returncode == 2, refused.stderr
        assert f"a daemon (pid {os.getpid()})" in refused.stderr and "stop the daemon" in refused.stderr
        assert _version(path) == typed
    finally:
        daemon.release()
    migrated = _cli(config, "store", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert f"schema version {len(MIGRATIONS)} (was {typed})" in migrated.stdout
    assert _version(path) == len(MIGRATIONS)
    assert _cli(config, "status").returncode in (0, 1)  # the commands work again


def test_store_migrate_makes_no_store_where_there_is_none_unless_asked(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    state_dir = tmp_path / "var"
    refused = _cli(config, "store", "migrate")
    assert refused.returncode == 2 and "there is no store at" in refused.stderr
    assert "store migrate --create" in refused.stderr
    assert sorted(p.name for p in state_dir.iterdir()) == ["inbox"]  # no store, no lock file
    made = _cli(config, "store", "migrate", "--create")
    assert made.returncode == 0, made.stderr
    assert _version(state_dir / "pfhjem-msg.sqlite3") == len(MIGRATIONS)


def test_a_sqlite_library_too_old_for_the_stores_statements_is_refused_before_the_store_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.sqlite3"
    monkeypatch.setattr(sqlite_file.sqlite3, "sqlite_version_info", (3, 34, 1))
    with pytest.raises(StoreError, match=r"SQLite library is 3\.34\.1, the store needs 3\.35\.0 or newer"):
        SqliteStore(path)
    assert not path.exists()
    monkeypatch.setattr(sqlite_file.sqlite3, "sqlite_version_info", (3, 37, 2))  # Ubuntu 22.04's
    SqliteStore(path).close()


def test_null_safe_comparisons_are_the_dialects_so_sqlite_before_3_39_runs_them() -> None:
    """``IS NOT DISTINCT FROM`` needs SQLite 3.39; the store writes ``Dialect.same`` instead."""
    package = ROOT / "pfhjem_msg"
    users = sorted(
        str(p.relative_to(package)) for p in package.rglob("*.py") if "DISTINCT FROM" in p.read_text("utf-8")
    )
    assert users == ["store/sql.py"]
