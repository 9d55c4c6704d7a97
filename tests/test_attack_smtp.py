"""Attacks on the SMTP intake that the limits of the first round did not stop, and variants
that held: a real aiosmtpd listener on 127.0.0.1 (as the daemon runs it), raw sockets and
smtplib, a real SQLite store."""

from __future__ import annotations

import contextlib
import re
import smtplib
import socket
import ssl
import time
from pathlib import Path

from tests.test_smtp_limits import MAIL, _greeting, _refused_metric, _self_signed, serving


def _trickle(sock: socket.socket, line: bytes, every: float, for_seconds: float) -> bool:
    """Send ``line`` every ``every`` seconds; True when the server closed the connection."""
    sock.settimeout(every)
    ended = time.monotonic() + for_seconds
    while time.monotonic() < ended:
        try:
            sock.sendall(line)
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


def test_attack_slow_loris_data_one_line_at_a_time_holds_a_slot_for_ever(tmp_path: Path) -> None:
    """A header line every 0.1 s never lets the 0.3 s idle timer fire; the connection must
    still be closed once it has stored nothing for ten idle timeouts (3 s here)."""
    before = _refused_metric("too_slow")
    with serving(tmp_path, idle_timeout_seconds=0.3) as (port, store):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
            c.ehlo()
            c.mail("a@x")
            c.rcpt("b@x")
            assert c.docmd("DATA")[0] == 354
            assert c.sock is not None
            assert _trickle(c.sock, b"X-Slow: a\r\n", 0.1, 4.5), "the trickling client still holds its slot"
            with contextlib.suppress(OSError):
                c.close()
        assert store.counts() == {}
        assert _send_ok(port), "a well-behaved client is still served"
    assert _refused_metric("too_slow") > before


def test_attack_slow_loris_commands_rset_every_moment(tmp_path: Path) -> None:
    with (
        serving(tmp_path, idle_timeout_seconds=0.3) as (port, _),
        socket.create_connection(("127.0.0.1", port)) as s,
    ):
        assert _greeting(s).startswith(b"220")
        assert _trickle(s, b"RSET\r\n", 0.1, 4.5), "RSET chatter held the connection"


def _send_ok(port: int) -> bool:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        return c.sendmail("hub@x", ["pfhjem@x"], MAIL) == {}


# -- variants that held -------------------------------------------------------------------------


def test_attack_pipelined_recipients_beyond_the_limit(tmp_path: Path) -> None:
    with serving(tmp_path, max_recipients=3) as (port, _), socket.create_connection(("127.0.0.1", port)) as s:
        assert _greeting(s).startswith(b"220")
        s.sendall(b"EHLO x\r\nMAIL FROM:<a@x>\r\n" + b"".join(b"RCPT TO:<r%d@x>\r\n" % i for i in range(50)))
        replies = b""
        s.settimeout(5)
        while replies.count(b"\r\n") < 56:  # EHLO's five lines, MAIL's and the 50 RCPT replies
            chunk = s.recv(65536)
            if not chunk:
                break
            replies += chunk
        assert replies.count(b"452 ") >= 47


def test_attack_bdat_chunking_is_not_offered(tmp_path: Path) -> None:
    with serving(tmp_path) as (port, store), smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.ehlo()
        assert not c.has_extn("chunking")
        c.mail("a@x")
        c.rcpt("b@x")
        code, _ = c.docmd("BDAT", "5 LAST")
        assert code >= 500
        assert store.counts() == {}


def test_attack_one_data_line_far_over_the_limit_without_a_newline(tmp_path: Path) -> None:
    """3 MB with no line end against a 1 MB limit: 552, nothing stored, and the connection
    stays usable for the next message."""
    with serving(tmp_path, max_bytes=1_000_000) as (port, store):
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
            c.ehlo()
            c.mail("a@x")
            c.rcpt("b@x")
            assert c.docmd("DATA")[0] == 354
            c.send(b"A" * 3_000_000 + b"\r\n.\r\n")
            code, _ = c.getreply()
            assert code == 552
            assert c.sendmail("hub@x", ["pfhjem@x"], MAIL) == {}
        assert store.counts() == {"received": 1}


def test_attack_commands_injected_before_the_starttls_handshake_are_dropped(tmp_path: Path) -> None:
    """MAIL sent in the same packet as STARTTLS, before the handshake: whoever sits in the
    path could inject it. It must not count once the connection is encrypted."""
    cert, key = _self_signed(tmp_path)
    with serving(tmp_path, tls_cert=cert, tls_key=key) as (port, _):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert _greeting(raw).startswith(b"220")
        raw.sendall(b"EHLO x\r\n")
        time.sleep(0.2)
        raw.recv(4096)
        raw.sendall(b"STARTTLS\r\nMAIL FROM:<injected@x>\r\n")
        assert raw.recv(4096).startswith(b"220")
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        with context.wrap_socket(raw) as tls:
            tls.sendall(b"EHLO x\r\n")
            assert _reply(tls).startswith(b"250")
            tls.sendall(b"RCPT TO:<b@x>\r\n")
            assert _reply(tls).startswith(b"503"), "the injected MAIL was taken"


def _reply(sock: socket.socket) -> bytes:
    """One whole SMTP reply (its last line has a space after the code)."""
    data = b""
    while not re.search(rb"(^|\r\n)\d{3} [^\r\n]*\r\n$", data):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
