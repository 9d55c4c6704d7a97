"""The spool takes regular files only: attacks by whoever may write into it, against a real
spool directory and a real SQLite store."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pfhjem_msg import metrics
from pfhjem_msg.intake.spool import Spool, claimed_waiting
from pfhjem_msg.store.sqlite import SqliteStore

SECRET = b"root:$6$not-for-the-store:19000:0:99999:7:::\n"


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


def _spool(inbox: Path, store: SqliteStore, max_bytes: int = 10_000, settle: float = 0.0) -> Spool:
    return Spool(inbox, store, _now, settle, max_bytes)


def _refused_metric(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("pfhjem_refused_total", {"reason": reason}) or 0.0


def _stored(store: SqliteStore) -> list[bytes]:
    return [bytes(r[0]) for r in store._db.execute("SELECT bytes FROM raw")]


def _in_time(work: Callable[[], object], seconds: float = 10.0) -> None:
    """Run ``work`` in a thread; fail (instead of hanging the suite) if it does not return."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the spool scan hung"


def test_symlink_to_a_secret_file_is_refused_not_stored(
    tmp_path: Path, inbox: Path, store: SqliteStore
) -> None:
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)
    os.symlink(secret, inbox / "x.xml")
    (inbox / "good.xml").write_bytes(b"<MsgHead/>")
    before = _refused_metric("symlink")
    spool = _spool(inbox, store)
    assert spool.scan() == 2
    assert _stored(store) == [b"<MsgHead/>"]
    assert [(r.name, r.reason, r.size) for r in store.refused_files()] == [("x.xml", "symlink", None)]
    assert _refused_metric("symlink") == before + 1
    assert (inbox / ".refused" / "x.xml").is_symlink() and not (inbox / "x.xml").exists()
    assert secret.read_bytes() == SECRET
    assert spool.scan() == 0  # refused once, not on every scan


def test_proc_self_environ_link_is_refused_and_the_environment_stays_out(
    inbox: Path, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PFHJEM_TEST_SECRET", "s3cret-smtp-password")
    os.symlink("/proc/self/environ", inbox / "env.xml")
    spool = _spool(inbox, store)
    spool.scan()
    assert _stored(store) == []
    assert [(r.name, r.reason) for r in store.refused_files()] == [("env.xml", "symlink")]
    assert b"s3cret" not in (
        store.path.read_bytes() + store.path.with_name(store.path.name + "-wal").read_bytes()
    )


def test_fifo_is_refused_and_does_not_hang_the_scan(inbox: Path, store: SqliteStore) -> None:
    os.mkfifo(inbox / "pipe.xml")
    (inbox / "after.xml").write_bytes(b"<MsgHead>after</MsgHead>")
    spool = _spool(inbox, store)
    _in_time(spool.scan)
    assert _stored(store) == [b"<MsgHead>after</MsgHead>"]
    assert [(r.name, r.reason) for r in store.refused_files()] == [("pipe.xml", "not_regular")]


def test_flip_flopping_symlink_and_fifo_swap_never_hang_or_leak(
    tmp_path: Path, inbox: Path, store: SqliteStore
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    stop = threading.Event()

    def flip() -> None:
        """Swap the same names between a link to a file, a link to a FIFO, a FIFO and a
        regular file, as fast as possible, while the daemon scans."""
        i = 0
        while not stop.is_set():
            i += 1
            for name in ("a.xml", "b.xml"):
                temp = tmp_path / f"t{i}{name}"
                kind = i % 4
                if kind == 0:
                    os.symlink(secret, temp)
                elif kind == 1:
                    os.symlink(fifo, temp)
                elif kind == 2:
                    os.mkfifo(temp)
                else:
                    temp.write_bytes(b"<MsgHead>regular</MsgHead>")
                try:
                    os.rename(temp, inbox / name)
                except OSError:
                    os.unlink(temp)

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    spool = _spool(inbox, store)

    def scans() -> None:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            spool.scan()

    try:
        _in_time(scans, 20)
    finally:
        stop.set()
        flipper.join(5)
    _in_time(spool.scan)
    assert set(_stored(store)) <= {b"<MsgHead>regular</MsgHead>"}
    assert SECRET not in store.path.read_bytes()
    reasons = {r.reason for r in store.refused_files(acknowledged=True, limit=100_000)}
    assert reasons and reasons <= {"symlink", "not_regular"}


def test_oversized_file_is_refused_with_its_size(inbox: Path, store: SqliteStore) -> None:
    (inbox / "big.xml").write_bytes(b"x" * 5000)
    before = _refused_metric("too_large")
    _spool(inbox, store, max_bytes=1000).scan()
    assert _stored(store) == []
    assert [(r.name, r.reason, r.size) for r in store.refused_files()] == [("big.xml", "too_large", 5000)]
    assert _refused_metric("too_large") == before + 1
    assert (inbox / ".refused" / "big.xml").stat().st_size == 5000


def test_a_file_at_the_limit_is_taken(inbox: Path, store: SqliteStore) -> None:
    (inbox / "edge.xml").write_bytes(b"y" * 1000)
    _spool(inbox, store, max_bytes=1000).scan()
    assert _stored(store) == [b"y" * 1000] and store.refused_files() == []


def _scan_as(uid: int, gid: int, base: Path) -> list[tuple[str, str, int]]:
    """Scan the spool in a forked child that has given up root (no exec: the interpreter may
    live where that user cannot reach), and hand back the refused rows through a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            store = SqliteStore(base / "state" / "pfhjem-msg.sqlite3")
            Spool(base / "inbox", store, lambda: datetime.now(UTC), 0.0, 10_000).scan()
            rows = [(r.name, r.reason, r.size) for r in store.refused_files()]
            store.close()
            os.write(write_end, json.dumps(rows).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read().decode()
    _, code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0, "the scan as an ordinary user failed"
    return [(name, reason, size) for name, reason, size in json.loads(out)]


def test_unreadable_file_is_refused(tmp_path: Path, inbox: Path, store: SqliteStore) -> None:
    if os.geteuid() != 0:
        path = inbox / "locked.xml"
        path.write_bytes(b"<MsgHead/>")
        path.chmod(0)
        _spool(inbox, store).scan()
        assert [(r.name, r.reason, r.size) for r in store.refused_files()] == [
            ("locked.xml", "unreadable", 10)
        ]
        return
    # Root reads any file: the daemon runs as an ordinary user (nobody) in a directory of its own.
    try:
        nobody = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        pytest.skip("there is no user nobody to run the daemon's side as")
    base = Path(tempfile.mkdtemp(prefix="pfhjem-unreadable-"))
    try:
        entry = pwd.getpwuid(nobody)
        for d in (base, base / "inbox"):
            d.mkdir(exist_ok=True)
            d.chmod(0o777)
        state = base / "state"  # the daemon's own, private, as the store demands
        state.mkdir(mode=0o700)
        os.chown(state, entry.pw_uid, entry.pw_gid)
        locked = base / "inbox" / "locked.xml"
        locked.write_bytes(b"<MsgHead/>")
        locked.chmod(0o600)  # the hub's own file, which the daemon's user may not read
        assert _scan_as(entry.pw_uid, entry.pw_gid, base) == [("locked.xml", "unreadable", 10)]
        assert (base / "inbox" / ".refused" / "locked.xml").read_bytes() == b"<MsgHead/>"
    finally:
        shutil.rmtree(base)


def test_claimed_directory_swapped_for_a_link_is_not_followed(
    tmp_path: Path, inbox: Path, store: SqliteStore
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "config.toml").write_bytes(SECRET)
    os.symlink(secrets, inbox / ".claimed")
    (inbox / "m.xml").write_bytes(b"<MsgHead/>")
    spool = _spool(inbox, store)
    assert spool.scan() == 0
    assert _stored(store) == []
    assert (secrets / "config.toml").read_bytes() == SECRET and (inbox / "m.xml").exists()
    os.unlink(inbox / ".claimed")
    assert spool.scan() == 1  # with the link gone, the daemon makes its own and goes on


def test_claimed_and_refused_directories_are_private(inbox: Path, store: SqliteStore) -> None:
    old = os.umask(0o022)
    try:
        os.symlink("/etc/hostname", inbox / "l.xml")
        _spool(inbox, store).scan()
    finally:
        os.umask(old)
    assert (inbox / ".claimed").stat().st_mode & 0o777 == 0o700
    assert (inbox / ".refused").stat().st_mode & 0o777 == 0o700


def test_files_kept_in_claimed_while_the_store_is_down_are_counted(inbox: Path, store: SqliteStore) -> None:
    (inbox / "m.xml").write_bytes(b"<MsgHead/>")
    spool = _spool(inbox, store)
    store.close()  # the store fails every write from here on, as on a full disk
    assert spool.scan() == 0
    waiting = claimed_waiting(inbox)
    assert waiting.count == 1 and waiting.oldest is not None and waiting.oldest <= time.time()
    assert [p.read_bytes() for p in (inbox / ".claimed").glob("*m.xml")] == [b"<MsgHead/>"]


def test_refused_directory_swapped_for_a_link_stops_refusing_without_spinning(
    tmp_path: Path, inbox: Path, store: SqliteStore
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, inbox / ".refused")
    os.mkfifo(inbox / "p.xml")
    spool = _spool(inbox, store)
    assert spool.scan() == 0 and spool.scan() == 0  # no work counted: the daemon does not spin
    assert list(elsewhere.iterdir()) == [] and store.refused_files() == []
    assert list((inbox / ".claimed").glob("*.p.xml"))
