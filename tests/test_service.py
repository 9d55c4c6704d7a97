"""The daemon as systemd runs it: real ``pfhjem-msg run`` processes, real signals, a real
datagram socket as systemd's notify socket, real ports, a real lock and real Unix groups."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SAMPLES, free_port, write_config

MARKED = "dlg11-marked-tema.xml"  # marked, for Fjordvik kommune's case unit
MSG_ID = "5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0001"


class Service:
    """A running ``pfhjem-msg run`` with its log in a file."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pfhjem_msg", "run", "--config", str(config)],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})},
            )  # fmt: skip

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.log.read_text().splitlines() if x.startswith("{")]

    def wait_for(self, event: str, count: int = 1, timeout: float = 30) -> dict[str, Any]:
        deadline = time.time() + timeout
        while True:
            found = [x for x in self.lines() if x.get("event") == event]
            if len(found) >= count:
                return found[count - 1]
            assert time.time() < deadline, f"no {event} in time:\n{self.log.read_text()[-3000:]}"
            assert self.proc.poll() is None, (
                f"the daemon exited {self.proc.returncode}:\n{self.log.read_text()}"
            )
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@contextlib.contextmanager
def service(config: Path, env: dict[str, str] | None = None) -> Iterator[Service]:
    s = Service(config, config.parent / "daemon.log", env)
    try:
        s.wait_for("daemon.started")
        yield s
    finally:
        s.stop()


def drop(inbox: Path, sample: str = MARKED) -> str:
    """A copy of a sample with a fresh MsgId, put into the spool as the hub does (atomically)."""
    new = str(uuid.uuid4())
    data = (SAMPLES / sample).read_bytes().replace(MSG_ID.encode(), new.encode())
    temp = inbox / f".{new}.tmp"
    temp.write_bytes(data)
    os.replace(temp, inbox / f"{new}.xml")
    return new


def wait_for_file(directory: Path, msg_id: str, timeout: float = 20) -> Path:
    deadline = time.time() + timeout
    while True:
        found = list(directory.glob(f"*{msg_id}.xml")) if directory.is_dir() else []
        if found:
            return found[0]
        assert time.time() < deadline, f"nothing for {msg_id} in {directory}"
        time.sleep(0.05)


# -- reload ------------------------------------------------------------------------------------


def test_sighup_applies_a_valid_edit_and_keeps_the_running_config_on_an_invalid_one(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    inbox = tmp_path / "var" / "inbox"
    units = tmp_path / "var" / "case-units"
    original = config.read_text(encoding="utf-8")
    with service(config) as s:
        first = drop(inbox)
        wait_for_file(units / "fjordvik", first)

        edited = original.replace('path = "var/case-units/fjordvik"', 'path = "var/case-units/fjordvik-new"')
        edited = edited.replace('state_dir = "var"', 'state_dir = "var2"')  # needs a restart
        edited = edited.replace("workers = 1", "workers = 2")  # a new pool of drafting processes
        # another store needs a restart too: the daemon goes on with its SQLite file
        edited += '\n[store]\nurl = "postgresql://pfhjem@127.0.0.1:1/pfhjem_msg"\n'
        config.write_text(edited, encoding="utf-8")
        s.proc.send_signal(signal.SIGHUP)
        assert s.wait_for("daemon.reloaded")["workers"] == 2
        restart = s.wait_for("daemon.reload_needs_restart")
        assert restart["keys"] == ["state_dir", "store.url"]
        second = drop(inbox)
        wait_for_file(units / "fjordvik-new", second)
        assert not list((units / "fjordvik").glob(f"*{second}.xml"))
        assert not (tmp_path / "var2").exists(), "state_dir changed without a restart"

        errors_before = sum(1 for x in s.lines() if x.get("level") == "error")
        config.write_text(edited.replace("workers = 2", 'workers = "many"'), encoding="utf-8")
        s.proc.send_signal(signal.SIGHUP)
        rejected = s.wait_for("daemon.reload_rejected")
        assert len(rejected["problems"]) == 1 and rejected["problems"][0].startswith("daemon.workers")
        third = drop(inbox)
        wait_for_file(units / "fjordvik-new", third)  # the last good configuration stays in force
        assert s.proc.poll() is None
        errors = [x for x in s.lines() if x.get("level") == "error"]
        assert len(errors) == errors_before + 1, errors

        config.write_text("this is [not toml", encoding="utf-8")
        s.proc.send_signal(signal.SIGHUP)
        assert "not valid TOML" in s.wait_for("daemon.reload_rejected", count=2)["problems"][0]
        fourth = drop(inbox)
        wait_for_file(units / "fjordvik-new", fourth)
        assert s.stop() == 0
    assert [x["event"] for x in s.lines()].count("daemon.started") == 1, "the daemon restarted"


# -- systemd notify and watchdog ---------------------------------------------------------------


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket named in $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.path = path
        self.received: list[tuple[float, str]] = []

    def env(self, watchdog_seconds: float) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(int(watchdog_seconds * 1_000_000))}

    def collect(self, seconds: float) -> list[str]:
        """Everything received during the next ``seconds``."""
        end = time.time() + seconds
        out = []
        while (left := end - time.time()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.received.append((time.time(), data))
            out.append(data)
        return out

    def until(self, field: str, timeout: float = 20) -> list[str]:
        """Everything received up to and including the first datagram carrying ``field``."""
        end = time.time() + timeout
        out: list[str] = []
        while time.time() < end:
            got = self.collect(min(0.2, end - time.time()))
            for i, data in enumerate(got):
                if field in data.split("\n"):
                    return out + got[: i + 1]
            out += got
        raise AssertionError(f"no {field} within {timeout}s; got {out}")


def test_notify_socket_hears_ready_watchdog_reloading_and_stopping(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    systemd = NotifySocket(tmp_path / "notify.sock")
    s = Service(config, tmp_path / "daemon.log", systemd.env(0.4))
    try:
        before_ready = systemd.until("READY=1")
        assert not any("WATCHDOG=1" in d for d in before_ready)
        pings = [d for d in systemd.collect(1.5) if d == "WATCHDOG=1"]
        assert len(pings) >= 4, pings  # every 0.2 s while idle rounds go on
        s.proc.send_signal(signal.SIGHUP)
        around = systemd.until("READY=1")
        reloading = [d for d in around if d.startswith("RELOADING=1")]
        assert len(reloading) == 1 and "\nMONOTONIC_USEC=" in reloading[0]
        s.proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in systemd.until("STOPPING=1")[-1]
        assert s.proc.wait(timeout=30) == 0
    finally:
        s.stop()
        systemd.sock.close()


def test_a_hung_round_stops_the_watchdog_pings_and_they_resume_after(tmp_path: Path) -> None:
    """The store is locked by another writer: the round taking a message in waits on it. The
    event loop is still free, but the pings must stop, so systemd would restart a daemon
    stuck like that for good."""
    config = write_config(tmp_path)
    systemd = NotifySocket(tmp_path / "notify.sock")
    with service(config, systemd.env(0.4)) as s:
        systemd.until("WATCHDOG=1")
        blocker = sqlite3.connect(tmp_path / "var" / "pfhjem-msg.sqlite3", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            drop(tmp_path / "var" / "inbox")
            s.wait_for("daemon.round_stalled")
            systemd.collect(0.1)  # the pings sent before the stall, still queued
            assert [d for d in systemd.collect(1.5) if d == "WATCHDOG=1"] == []
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        systemd.until("WATCHDOG=1", timeout=15)
    systemd.sock.close()


# -- one daemon per store ----------------------------------------------------------------------


def test_second_daemon_on_the_same_store_exits_2_and_operator_commands_work_beside_it(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with service(config) as s:
        for extra in ([], ["--once"]):
            second = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", *extra, "--config", str(config)],
                                    capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
            assert second.returncode == 2, second.stderr
            assert f"another daemon (pid {s.proc.pid}) runs on this store" in second.stderr
            assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        status = subprocess.run([sys.executable, "-m", "pfhjem_msg", "status", "--config", str(config)],
                                capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
        assert status.returncode == 0 and "messages:" in status.stdout, status.stderr
        assert s.proc.poll() is None
    lock = tmp_path / "var" / "pfhjem-msg.lock"
    assert lock.stat().st_mode & 0o777 == 0o600
    after = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert after.returncode == 0, after.stderr  # the stopped daemon freed the store


# -- a port in use -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["metrics.address", "intake.smtp.port"])
def test_port_in_use_is_one_line_naming_the_key_and_exit_2(tmp_path: Path, key: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        if key == "metrics.address":
            config = write_config(tmp_path, extra=f'[metrics]\naddress = "127.0.0.1:{port}"\n')
        else:
            config = write_config(tmp_path, smtp_intake_port=port)
        result = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--config", str(config)],
                                capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert result.returncode == 2, result.stderr
    # The daemon's JSON log lines (e.g. the GP registry loaded) may come first; the error is one line.
    plain = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(plain) == 1, result.stderr
    assert key in plain[0] and f"127.0.0.1:{port}" in plain[0]
    assert "Traceback" not in result.stderr


def test_the_smtp_and_metrics_ports_free_work_together(tmp_path: Path) -> None:
    """The counterpart of the test above: the same configuration with free ports serves."""
    config = write_config(tmp_path, smtp_intake_port=free_port(),
                          extra=f'[metrics]\naddress = "127.0.0.1:{free_port()}"\n')  # fmt: skip
    with service(config) as s:
        assert s.proc.poll() is None
    assert s.proc.returncode == 0


# -- files the hub and the case units can read -------------------------------------------------


@pytest.fixture
def second_group() -> Iterator[tuple[str, int]]:
    if os.geteuid() != 0:
        pytest.skip("creating a Unix group needs root (groupadd)")
    if shutil.which("groupadd") is None:
        pytest.skip("groupadd is not installed")
    name = f"pfhjemhub{uuid.uuid4().hex[:6]}"
    subprocess.run(["groupadd", name], check=True)
    try:
        import grp

        yield name, grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["groupdel", name], check=False)


def _as_nobody(gid: int | None, path: Path) -> subprocess.CompletedProcess[bytes]:
    """Read ``path`` as an unprivileged user, in group ``gid`` or in none of ours."""

    def drop_privileges() -> None:
        os.setgroups([gid] if gid is not None else [])
        os.setgid(gid if gid is not None else 65534)
        os.setuid(65534)

    return subprocess.run(["cat", str(path)], capture_output=True, preexec_fn=drop_privileges)


def test_deliveries_are_group_readable_under_umask_0077_and_the_store_stays_private(
    tmp_path: Path, second_group: tuple[str, int]
) -> None:
    group, gid = second_group
    # Outside pytest's private tmp directory, so that another user can reach it at all.
    shared = Path(tempfile.mkdtemp(prefix="pfhjem-shared-", dir="/tmp"))
    shared.chmod(0o711)
    try:
        config = write_config(tmp_path, case_unit=f'transport = "dir", group = "{group}"')
        text = config.read_text(encoding="utf-8")
        text = text.replace('outbox = "var/outbox"', f'outbox = "{shared}/hub/outbox"\ngroup = "{group}"')
        text = text.replace('path = "var/case-units/fjordvik"', f'path = "{shared}/units/fjordvik"')
        config.write_text(text, encoding="utf-8")
        msg_id = drop(tmp_path / "var" / "inbox")
        result = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                                capture_output=True, text=True, cwd=ROOT, timeout=120, umask=0o077)  # fmt: skip
        assert result.returncode == 0, result.stderr

        outbox, unit = shared / "hub" / "outbox", shared / "units" / "fjordvik"
        delivered = [*outbox.glob("apprec-*.xml"), *outbox.glob("gpcopy-*.xml"), *unit.glob(f"*{msg_id}.xml")]
        assert len(delivered) == 3, delivered
        for path in delivered:
            st = path.stat()
            assert (oct(st.st_mode & 0o777), st.st_gid) == (oct(0o640), gid), path
        for directory in (shared / "hub", outbox, shared / "units", unit):
            st = directory.stat()
            assert (oct(st.st_mode & 0o777), st.st_gid) == (oct(0o750), gid), directory

        state = tmp_path / "var"  # the store's files stay the service user's alone
        for name in ("pfhjem-msg.sqlite3", "pfhjem-msg.lock"):
            assert (state / name).stat().st_mode & 0o077 == 0, name

        assert _as_nobody(gid, delivered[0]).returncode == 0, "a member of the group cannot read it"
        assert _as_nobody(None, delivered[0]).returncode != 0, "a stranger can read it"
    finally:
        shutil.rmtree(shared)


def test_a_group_that_does_not_exist_stops_the_start_with_one_clear_problem(tmp_path: Path) -> None:
    config = write_config(tmp_path, case_unit='transport = "dir", group = "no-such-group-pfhjem"')
    result = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "no Unix group 'no-such-group-pfhjem'" in result.stderr and "Traceback" not in result.stderr
