"""SMTP intake limits: attacks on the listener, with a real aiosmtpd server on 127.0.0.1, real
clients (smtplib, raw sockets) and a real SQLite store; the flood also against a real
``pfhjem-msg run`` with a lowered file-descriptor limit."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import resource
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pfhjem_msg import metrics
from pfhjem_msg.config import SmtpIntakeSettings
from pfhjem_msg.intake.smtp import StoringHandler, start_server
from pfhjem_msg.store.sqlite import SqliteStore
from tests.conftest import ROOT, SAMPLES, free_port, write_config

MAIL = (SAMPLES / "mime-attachment.eml").read_bytes()


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def serving(tmp_path: Path, max_bytes: int = 1_000_000, **limits: Any) -> Iterator[tuple[int, SqliteStore]]:
    """The intake listener in its own event loop thread, as the daemon runs it."""
    store = SqliteStore(tmp_path / "state" / "pfhjem-msg.sqlite3")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    pool = ThreadPoolExecutor(1)
    handler = StoringHandler(store, _now, pool)
    settings = SmtpIntakeSettings(port=0, **limits)
    server = asyncio.run_coroutine_threadsafe(
        start_server(handler, "127.0.0.1", 0, max_bytes, limits=settings, temp_dir=tmp_path / "state"), loop
    ).result(10)
    try:
        yield server.sockets[0].getsockname()[1], store
    finally:
        loop.call_soon_threadsafe(server.close)
        asyncio.run_coroutine_threadsafe(server.wait_closed(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        pool.shutdown()
        store.close()


def _greeting(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    try:
        return sock.recv(200)
    except (TimeoutError, ConnectionResetError):
        return b""


def _send(port: int, data: bytes = MAIL, rcpts: tuple[str, ...] = ("pfhjem@x",)) -> dict[str, Any]:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
        return c.sendmail("hub@x", list(rcpts), data)


def _refused_metric(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("pfhjem_smtp_refused_total", {"reason": reason}) or 0.0


def test_idle_connection_flood_is_capped_and_a_good_client_gets_through(tmp_path: Path) -> None:
    with serving(tmp_path, max_connections=10, idle_timeout_seconds=4.0) as (port, store):
        flood = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(300)]
        try:
            greetings = [_greeting(s, 2.0)[:3] for s in flood]
            assert greetings.count(b"220") == 10
            assert greetings.count(b"421") == 290
            # The held sockets never say a word: after the idle timeout they are closed, and a
            # client that tries again after its 421 (as SMTP clients do) gets its message in.
            deadline = time.monotonic() + 15
            while True:
                try:
                    assert _send(port) == {}
                    break
                except smtplib.SMTPConnectError as exc:
                    assert exc.smtp_code == 421 and time.monotonic() < deadline
                    time.sleep(0.2)
            assert store.counts() == {"received": 1}
            assert all(
                s.recv(100) in (b"", b"421 4.3.2 Too many connections; try again later\r\n")
                for s in flood[:10]
            )
        finally:
            for s in flood:
                s.close()


def test_idle_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    with (
        serving(tmp_path, idle_timeout_seconds=0.5) as (port, _),
        socket.create_connection(("127.0.0.1", port)) as s,
    ):
        assert _greeting(s).startswith(b"220")
        started = time.monotonic()
        s.settimeout(10)
        assert s.recv(100) == b""  # closed by the server
        assert time.monotonic() - started < 5


def test_slow_but_steady_data_is_not_cut_by_the_idle_timeout(tmp_path: Path) -> None:
    with serving(tmp_path, idle_timeout_seconds=1.0) as (port, store):
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
            c.ehlo()
            c.mail("hub@x")
            c.rcpt("pfhjem@x")
            code, _ = c.docmd("DATA")
            assert code == 354
            for i in range(8):  # 2.4 s in all, never 1 s without a byte
                c.send(f"X-Line-{i}: steady\r\n".encode())
                time.sleep(0.3)
            c.send(b"\r\n<MsgHead/>\r\n.\r\n")
            code, reply = c.getreply()
        assert code == 250 and b"Stored as message 1" in reply
        assert b"<MsgHead/>" in store.raw(1)


def test_oversized_streaming_data_is_refused_with_552_and_nothing_stored(tmp_path: Path) -> None:
    before = _refused_metric("too_large")
    with serving(tmp_path, max_bytes=100_000) as (port, store):
        big = b"Subject: big\r\n\r\n" + (b"A" * 998 + b"\r\n") * 2000  # 2 MB, no SIZE declared
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
            c.ehlo()
            c.mail("hub@x")
            c.rcpt("pfhjem@x")
            code, reply = c.data(big)
            assert code == 552 and b"at most 100000 bytes" in reply
            assert c.sendmail("hub@x", ["pfhjem@x"], MAIL) == {}  # the connection goes on
        assert store.counts() == {"received": 1}
    assert _refused_metric("too_large") == before + 1
    assert not [p for p in (tmp_path / "state").iterdir() if not p.name.startswith("pfhjem-msg.sqlite3")]


def test_dot_stuffing_and_long_lines_arrive_as_sent(tmp_path: Path) -> None:
    body = b"Subject: t\r\n\r\n.leading dot\r\n..two\r\n" + b"B" * 5000 + b"\r\nend\r\n"
    with serving(tmp_path) as (port, store):
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
            c.ehlo()
            c.mail("hub@x")
            c.rcpt("pfhjem@x")
            stuffed = body.replace(b"\r\n.", b"\r\n..")
            c.send(b"DATA\r\n")
            assert c.getreply()[0] == 354
            c.send(stuffed + b".\r\n")
            assert c.getreply()[0] == 250
        assert store.raw(1) == body


_CLIENTS = """
import smtplib, sys, threading
port, size = int(sys.argv[1]), int(sys.argv[2])
body = b"Subject: big\\r\\n\\r\\n" + (b"C" * 998 + b"\\r\\n") * (size // 1000)
codes = []
def send(i):
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        c.sendmail("hub@x", ["pfhjem@x"], body + str(i).encode())
        codes.append(250)
threads = [threading.Thread(target=send, args=(i,)) for i in range(10)]
for t in threads: t.start()
for t in threads: t.join()
print(len(codes))
"""


def test_ten_parallel_large_messages_are_not_held_in_memory(tmp_path: Path) -> None:
    import tracemalloc

    size = 3_000_000
    with serving(tmp_path, max_bytes=4_000_000) as (port, store):
        tracemalloc.start()
        try:
            result = subprocess.run([sys.executable, "-c", _CLIENTS, str(port), str(size)],
                                    capture_output=True, text=True, timeout=120)  # fmt: skip
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result.stdout.strip() == "10", result.stderr
        assert store.counts() == {"received": 10}
    # Ten messages of 3 MB arrive at once; the daemon holds at most the one it is storing
    # (and its copy for the store), not ten.
    assert peak < 4 * size, f"peak {peak} bytes"


def test_too_many_recipients_get_452(tmp_path: Path) -> None:
    before = _refused_metric("too_many_recipients")
    with serving(tmp_path, max_recipients=2) as (port, store):
        refused = _send(port, rcpts=("a@x", "b@x", "c@x", "d@x"))
        assert {k: v[0] for k, v in refused.items()} == {"c@x": 452, "d@x": 452}
        assert store.counts() == {"received": 1}
    assert _refused_metric("too_many_recipients") == before + 2


def test_client_not_allowed_is_turned_away_before_it_can_speak(tmp_path: Path) -> None:
    before = _refused_metric("not_allowed")
    with serving(tmp_path, allow=("10.0.0.0/8", "192.0.2.7")) as (port, store):
        with pytest.raises(smtplib.SMTPConnectError) as caught:
            _send(port)
        assert caught.value.smtp_code == 554
        assert store.counts() == {}
    assert _refused_metric("not_allowed") == before + 1
    with serving(tmp_path, allow=("10.0.0.0/8", "127.0.0.0/8")) as (port, store):
        assert _send(port) == {} and store.counts() == {"received": 1}


def test_allow_list_entry_that_is_no_network_is_a_config_error(tmp_path: Path) -> None:
    from pfhjem_msg.errors import ConfigError

    with (
        pytest.raises(ConfigError, match=r"intake.smtp.allow: 'hub.example' is not an address"),
        serving(tmp_path, allow=("hub.example",)),
    ):
        pass


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp.crt", directory / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_starttls_with_the_configured_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    with serving(tmp_path, tls_cert=cert, tls_key=key, max_connections=1) as (port, store):
        for _ in range(2):  # the connection is counted once and given back once
            with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
                c.ehlo()
                assert c.has_extn("starttls")
                context = ssl.create_default_context(cafile=str(cert))
                context.check_hostname = False
                c.starttls(context=context)
                peer_cert = c.sock.getpeercert(binary_form=True)
                c.sendmail("hub@x", ["pfhjem@x"], MAIL)
            assert peer_cert is not None
        assert store.counts() == {"received": 1}  # the same bytes twice: stored once


def test_without_a_certificate_no_starttls_is_offered(tmp_path: Path) -> None:
    with serving(tmp_path) as (port, _), smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
        c.ehlo()
        assert not c.has_extn("starttls")


def test_idle_connection_flood_against_the_daemon_leaves_spool_and_smtp_working(tmp_path: Path) -> None:
    """A few hundred idle sockets against a real daemon whose file-descriptor limit is lower
    than the flood: the spool is still taken, a good client gets its message stored, no
    error floods the log, and SIGTERM still stops it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024 and hard >= 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    elif soft < 1024:
        pytest.skip("this test process may not open the 400 sockets of the flood")
    port = free_port()
    config = write_config(tmp_path, smtp_intake_port=port)
    text = config.read_text(encoding="utf-8").replace(
        f"port = {port}\n", f"port = {port}\nmax_connections = 40\nidle_timeout_seconds = 2\n"
    )
    config.write_text(text, encoding="utf-8")
    log = tmp_path / "daemon.log"

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pfhjem_msg", "run", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=low_limit)  # fmt: skip
    flood: list[socket.socket] = []
    try:
        deadline = time.time() + 30
        while b"daemon.started" not in log.read_bytes():
            assert time.time() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.05)
        for _ in range(400):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        inbox = tmp_path / "var" / "inbox"
        (inbox / ".m.tmp").write_bytes((SAMPLES / "dlg11-marked-tema.xml").read_bytes())
        os.replace(inbox / ".m.tmp", inbox / "m.xml")
        while not list((tmp_path / "var" / "outbox").glob("apprec-*.xml")):
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        while True:  # a good client: tries again after a 421, as the hub does
            try:
                assert _send(port) == {}
                break
            except (smtplib.SMTPConnectError, smtplib.SMTPServerDisconnected):
                assert time.time() < deadline + 20, log.read_text()[-3000:]
                time.sleep(0.2)
        assert proc.poll() is None
    finally:
        for s in flood:
            s.close()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
    output = log.read_text(encoding="utf-8")
    assert "Traceback" not in output and "Too many open files" not in output
    assert "round_failed" not in output and "daemon.stopped" in output
    assert len(output.splitlines()) < 200, "the flood filled the log"
