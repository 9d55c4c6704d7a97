"""PostgreSQL going away under a running daemon, and coming back: connections killed by the
server (``pg_terminate_backend``, as an administrator or a failover does), and an outage of
several seconds (a TCP proxy between the daemon and PostgreSQL is stopped and started; the
shared server itself is never stopped).

Messages arrive by the spool and by SMTP throughout. What must hold: nothing is acknowledged
before it is stored (SMTP answers 4xx while the store is away, spool files stay), the daemon
neither dies nor hangs, it says so in few log lines without the URL's password, metrics and
``status`` show the store failing, and when the database is back it recovers by itself: every
message stored once, finished, with exactly one AppRec."""

from __future__ import annotations

import json
import os
import random
import signal
import smtplib
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from lxml import etree

from pfhjem_msg.store.postgres import PostgresStore
from tests.conftest import ROOT, free_port, write_config
from tests.pg_proxy import Proxy
from tests.store_backends import PgServer
from tests.test_crash import make_messages, mime_mail

pytestmark = pytest.mark.slow

SECRET = "outage-s3cret"
"""A password in the daemon's URL (trust auth ignores it): it must appear in no output."""


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}:{SECRET}@127.0.0.1:{port}"))


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pfhjem_msg", "run", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    deadline = time.time() + 60
    while b"daemon.started" not in log.read_bytes():
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.time() < deadline, "the daemon did not start"
        time.sleep(0.05)
    return proc


def _events(log: Path) -> list[dict[str, object]]:
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def _wait(what: str, check: object, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not check():  # type: ignore[operator]
        assert time.time() < deadline, f"timed out waiting until {what}"
        time.sleep(0.2)


class Hub:
    """Hands messages over by the spool and by SMTP, as the hub does: SMTP retried after a
    4xx, the answers kept."""

    def __init__(self, inbox: Path, smtp_port: int) -> None:
        self.inbox = inbox
        self.smtp_port = smtp_port
        self.accepted: set[str] = set()
        self.replies: list[int] = []
        self.spooled = 0

    def spool(self, msg_id: str, data: bytes) -> None:
        temp = self.inbox / f".{msg_id}.tmp"
        temp.write_bytes(data)
        os.replace(temp, self.inbox / f"{self.spooled:05d}-{msg_id}.xml")
        self.spooled += 1

    def smtp_once(self, msg_id: str, data: bytes) -> int:
        """One attempt: the reply code to DATA (0: could not talk at all)."""
        try:
            with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=60) as client:
                client.sendmail("hub@fjordvik.example", ["pfhjem@fjordvik.example"], mime_mail(msg_id, data))
        except smtplib.SMTPDataError as exc:
            self.replies.append(exc.smtp_code)
            return exc.smtp_code
        except (OSError, smtplib.SMTPException):
            return 0
        self.replies.append(250)
        self.accepted.add(msg_id)
        return 250

    def smtp_until_accepted(self, pending: list[tuple[str, bytes]], seconds: float = 120) -> None:
        deadline = time.time() + seconds
        for msg_id, data in pending:
            while self.smtp_once(msg_id, data) != 250:
                assert time.time() < deadline, "SMTP intake never accepted a message after the outage"
                time.sleep(0.3)


def _finished(url: str, count: int) -> bool:
    store = PostgresStore(url, create=False)
    try:
        return store.counts() == {"done": count}
    finally:
        store.close()


def _plain_lines(log: Path) -> list[str]:
    """Lines that are not the daemon's JSON log lines (a library printing on its own, a
    traceback)."""
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            json.loads(line)
        except ValueError:
            out.append(line)
    return out


def _check_outcome(url: str, outbox: Path, messages: list[tuple[str, bytes]]) -> None:
    import psycopg

    with psycopg.connect(url) as conn:  # ids may have gaps: a sequence does not roll back
        rows = conn.execute("SELECT id, msg_id, state FROM messages ORDER BY id").fetchall()
    counts = Counter(state for _, _, state in rows)
    ids = [msg_id for _, msg_id, _ in rows]
    assert counts == {"done": len(messages)}
    assert Counter(ids) == Counter(m for m, _ in messages), "a message is lost or stored twice"
    originals = Counter(
        etree.parse(str(p)).findtext("{*}OriginalMsgId/{*}Id") for p in outbox.glob("apprec-*.xml")
    )
    assert originals == Counter(m for m, _ in messages), "an AppRec is missing or doubled"


def test_outage_of_several_seconds_loses_nothing_and_recovers(pg_server: PgServer, tmp_path: Path) -> None:
    url = pg_server.fresh()
    proxy = Proxy(("127.0.0.1", urlsplit(url).port or 5432), free_port())
    proxy.start()
    smtp_port, metrics_port = free_port(), free_port()
    config = write_config(tmp_path, smtp_intake_port=smtp_port, extra=(
        f'[store]\nurl = "{_via(url, proxy.port)}"\n[metrics]\naddress = "127.0.0.1:{metrics_port}"\n'
        "refresh_seconds = 0.5\n"))  # fmt: skip
    log = tmp_path / "daemon.log"
    inbox = tmp_path / "var" / "inbox"
    hub = Hub(inbox, smtp_port)
    messages = make_messages(24, random.Random(14))
    before, during_spool, during_smtp, after = messages[:6], messages[6:14], messages[14:18], messages[18:]
    daemon = _start(config, log)
    try:
        for i, (msg_id, data) in enumerate(before):
            hub.spool(msg_id, data) if i % 2 else hub.smtp_until_accepted([(msg_id, data)])
        _wait("the first messages are finished", lambda: _finished(url, len(before)))
        assert _metric(metrics_port, "pfhjem_store_available") == 1

        proxy.stop()  # the database is gone, as the daemon sees it
        outage_began = time.time()
        for msg_id, data in during_spool:
            hub.spool(msg_id, data)
        refused = [hub.smtp_once(msg_id, data) for msg_id, data in during_smtp]
        assert all(400 <= code < 500 for code in refused), refused  # never 250 while it cannot store
        assert hub.accepted.isdisjoint(m for m, _ in during_smtp)
        time.sleep(max(0.0, 6 - (time.time() - outage_began)))  # an outage of several seconds
        assert daemon.poll() is None, "the daemon died while the store was away"
        left = sorted(p.name for p in inbox.iterdir() if not p.name.startswith(".")) + sorted(
            p.name for p in (inbox / ".claimed").iterdir()
        )
        assert len(left) == len(during_spool), "a spool file went before it was stored"
        _wait(
            "metrics show the store failing", lambda: _metric(metrics_port, "pfhjem_store_available") == 0, 30
        )
        status = subprocess.run([sys.executable, "-m", "pfhjem_msg", "status", "--config", str(config)],
                                capture_output=True, text=True, cwd=tmp_path, timeout=120,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
        assert status.returncode == 75 and "cannot connect to the store" in status.stderr, status.stderr
        assert SECRET not in status.stdout + status.stderr

        proxy.start()  # the database is back: no one restarts the daemon
        hub.smtp_until_accepted(during_smtp)
        for i, (msg_id, data) in enumerate(after):
            hub.spool(msg_id, data) if i % 2 else hub.smtp_until_accepted([(msg_id, data)])
        _wait("every message is finished after the outage", lambda: _finished(url, len(messages)))
        _wait("metrics show the store back", lambda: _metric(metrics_port, "pfhjem_store_available") == 1, 30)
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
        proxy.stop()
    assert code == 0
    text = log.read_text(encoding="utf-8", errors="replace")
    assert SECRET not in text
    assert _plain_lines(log) == []
    events = [e.get("event") for e in _events(log)]
    unavailable = events.count("store.unavailable")
    assert 1 <= unavailable <= 2, Counter(events)  # one line for the outage, not one per poll
    assert "store.recovered" in events
    assert events.count("spool.store_failed") + events.count("daemon.round_failed") <= 20, Counter(events)
    assert not [p for p in inbox.iterdir() if not p.name.startswith(".")]
    assert list((inbox / ".claimed").iterdir()) == []
    _check_outcome(url, tmp_path / "var" / "outbox", messages)


def test_connections_killed_by_the_server_again_and_again(pg_server: PgServer, tmp_path: Path) -> None:
    """``pg_terminate_backend`` on every connection of the daemon, repeatedly, while messages
    stream in: every pooled connection it had is dead, and it must notice and carry on."""
    url = pg_server.fresh()
    database = urlsplit(url).path.lstrip("/")
    smtp_port = free_port()
    config = write_config(tmp_path, smtp_intake_port=smtp_port, extra=f'[store]\nurl = "{url}"\n')
    log = tmp_path / "daemon.log"
    inbox = tmp_path / "var" / "inbox"
    hub = Hub(inbox, smtp_port)
    messages = make_messages(40, random.Random(1414))
    by_spool, by_smtp = messages[:20], messages[20:]
    daemon = _start(config, log)
    killed = 0
    stop = threading.Event()

    def kill_connections() -> None:
        nonlocal killed
        import psycopg

        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            while not stop.is_set():
                rows = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid != pg_backend_pid()", (database,),
                ).fetchall()  # fmt: skip
                killed += sum(1 for (ok,) in rows if ok)
                stop.wait(0.3)

    def feed_spool() -> None:
        for msg_id, data in by_spool:
            hub.spool(msg_id, data)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_connections)
    feeder = threading.Thread(target=feed_spool)
    try:
        killer.start()
        feeder.start()
        hub.smtp_until_accepted(by_smtp, seconds=240)
        feeder.join()
        time.sleep(1)
        stop.set()
        killer.join()
        assert daemon.poll() is None, "the daemon died when its connections were killed"
        _wait("every message is finished", lambda: _finished(url, len(messages)))
    finally:
        stop.set()
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
    assert code == 0
    assert killed >= 5, killed
    assert all(code in (250, 451) for code in hub.replies), Counter(hub.replies)
    assert _plain_lines(log) == []
    assert not [p for p in inbox.iterdir() if not p.name.startswith(".")]
    assert list((inbox / ".claimed").iterdir()) == []
    _check_outcome(url, tmp_path / "var" / "outbox", messages)
