"""SMTP intake (aiosmtpd, in the daemon's event loop). ``250`` only after the message is on
disk in the store; ``451`` if it could not be stored, so the hub tries again.

Anyone who can reach the port is untrusted, so the listener has limits that keep a flood from
starving the rest of the daemon (the spool, the deliveries, well-behaved clients):

- at most ``max_connections`` at once: one more is told ``421`` and closed at once, so idle
  sockets cannot use up the process's file descriptors;
- a client outside ``allow`` is told ``554`` and closed before it may say anything;
- ``idle_timeout_seconds`` without a line from the client closes the connection (also in the
  middle of DATA);
- a connection must store a message (or leave) within ``PROGRESS_FACTOR`` idle timeouts, a
  time that each DATA chunk extends by its size at ``MIN_DATA_RATE``: a client that trickles a
  line every few seconds (a slow-loris) cannot hold a slot for ever, while a large transfer
  that keeps up a modest rate is never cut off;
- DATA streams into a nameless temporary file in the state directory, not into memory, and
  stops being written at ``max_message_bytes`` (``552`` once the client has finished); only
  the one thread that stores messages holds a message in memory, one at a time;
- ``max_recipients`` per message (``452``), and a budget for chatter (NOOP, HELP, VRFY);
- STARTTLS with the configured certificate, when there is one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from aiosmtpd.smtp import SMTP, Envelope, Session, syntax

from pfhjem_msg import metrics
from pfhjem_msg.config import SmtpIntakeSettings
from pfhjem_msg.errors import ConfigError, StoreUnavailable
from pfhjem_msg.logs import get_logger
from pfhjem_msg.store.base import Store

log = get_logger("pfhjem_msg.intake.smtp")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CHATTER_LIMITS = {"NOOP": 20, "HELP": 10, "VRFY": 10, "EXPN": 10, "*": 100_000}
"""Commands per connection: keep-alive chatter cannot hold a connection for ever; a hub may
still send many messages over one connection."""
PROGRESS_FACTOR = 10
"""Idle timeouts a connection may spend without storing a message (300 s by default)."""
MIN_DATA_RATE = 1024
"""Bytes per second of DATA that earn more time: a 64 MiB message may take 18 hours."""


def _peer(session: Session) -> str:
    return str(session.peer[0]) if isinstance(session.peer, tuple) else "?"


class StoringHandler:
    def __init__(self, store: Store, clock: Callable[[], datetime], executor: Executor,
                 on_stored: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.store = store
        self.clock = clock
        self.executor = executor
        self.on_stored = on_stored
        self.last_intake: datetime | None = None

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:  # fmt: skip
        limit = getattr(server, "max_recipients", None)
        if limit is not None and len(envelope.rcpt_tos) >= limit:
            metrics.child(metrics.smtp_refused, "too_many_recipients").inc()
            return f"452 4.5.3 Too many recipients (at most {limit} per message)"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def store_file(self, session: Session, data: IO[bytes]) -> str:
        """Store the received message (read from its temporary file in the storing thread)."""
        peer = _peer(session)
        loop = asyncio.get_running_loop()
        source = f"smtp:{peer}"
        try:
            accepted = await loop.run_in_executor(
                self.executor, lambda: self.store.accept(data.read(), source, self.clock())
            )
        except StoreUnavailable:  # the store logged its outage once; the hub tries again
            metrics.child(metrics.smtp_refused, "store_unavailable").inc()
            return "451 4.3.0 The message store is unavailable; nothing was stored; try again later"
        except Exception as exc:
            log.error("smtp.store_failed", peer=peer, error=type(exc).__name__)
            return "451 4.3.0 The message could not be stored; try again later"
        self.last_intake = self.clock()
        if accepted.new:
            metrics.child(metrics.received, "smtp").inc()
        log.info("message.received", message_id=accepted.message_id, source="smtp", new=accepted.new)
        if self.on_stored:
            self.on_stored()
        return f"250 2.0.0 Stored as message {accepted.message_id}"


class Gate:
    """What the listener lets in: the allow-list, and the count of open connections."""

    def __init__(self, max_connections: int, allow: Sequence[Network]) -> None:
        self.max_connections = max_connections
        self.allow = tuple(allow)
        self.open = 0

    def refusal(self, peer: object) -> tuple[str, str] | None:
        """(metric reason, SMTP reply) when this client may not go on, else None."""
        if self.allow:
            try:
                address = ipaddress.ip_address(peer[0] if isinstance(peer, tuple) else "")
            except ValueError:
                address = None
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            if address is None or not any(address in net for net in self.allow):
                return "not_allowed", "554 5.7.1 This client address may not send here"
        if self.open >= self.max_connections:
            return "too_many_connections", "421 4.3.2 Too many connections; try again later"
        return None


class LimitedSMTP(SMTP):
    """aiosmtpd's SMTP with the limits above (see the module's docstring)."""

    def __init__(self, handler: StoringHandler, gate: Gate, max_recipients: int, temp_dir: Path | None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(handler, **kwargs)
        self.gate = gate
        self.max_recipients = max_recipients
        self.temp_dir = temp_dir
        self._counted = False
        self._turned_away = False
        self._deadline: float | None = None
        """Loop time by which this connection must have stored a message (see the module)."""

    def _reset_timeout(self, duration: float | None = None) -> None:
        """The idle timer, never later than the progress deadline."""
        now = self.loop.time()
        if self._deadline is None:
            self._deadline = now + self._timeout_duration * PROGRESS_FACTOR
        left = min(duration or self._timeout_duration, self._deadline - now)
        super()._reset_timeout(max(left, 0.001))

    def _timeout_cb(self) -> None:
        if self._deadline is not None and self.loop.time() >= self._deadline and self.transport is not None:
            metrics.child(metrics.smtp_refused, "too_slow").inc()
            log.warning("smtp.too_slow", peer=_peer(self.session) if self.session else "?",
                        seconds=self._timeout_duration * PROGRESS_FACTOR)  # fmt: skip
            assert isinstance(self.transport, asyncio.WriteTransport)
            self.transport.write(b"421 4.4.2 Too slow: no message stored in time; closing\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._original_transport is None and not self._counted:  # not the STARTTLS upgrade
            refusal = self.gate.refusal(transport.get_extra_info("peername"))
            if refusal is not None:
                reason, reply = refusal
                self._turned_away = True
                metrics.child(metrics.smtp_refused, reason).inc()
                assert isinstance(transport, asyncio.WriteTransport)
                transport.write(reply.encode() + b"\r\n")
                transport.close()
                return
            self.gate.open += 1
            self._counted = True
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._turned_away:
            super().data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._turned_away else super().eof_received()

    def connection_lost(self, error: Exception | None) -> None:
        if self._turned_away:
            return
        if self._counted:
            self.gate.open -= 1
            self._counted = False
        super().connection_lost(error)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None and self.session is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        with tempfile.TemporaryFile(dir=self.temp_dir) as spool:
            size = await self._receive(spool)
            limit = self.data_size_limit
            if limit is not None and size > limit:
                metrics.child(metrics.smtp_refused, "too_large").inc()
                log.warning("smtp.too_large", peer=_peer(self.session), limit=limit)
                status = f"552 5.3.4 Message too big (at most {limit} bytes)"
            else:
                spool.seek(0)
                handler: StoringHandler = self.event_handler
                status = await handler.store_file(self.session, spool)
        self.envelope = self._create_envelope()
        if status.startswith("250"):  # progress: the next message gets its own time
            self._deadline = self.loop.time() + self._timeout_duration * PROGRESS_FACTOR
        await self.push(status)

    async def _receive(self, out: IO[bytes]) -> int:
        """Copy the message to ``out`` until the lone dot, undoing the dot-stuffing; stop
        writing past the limit but read on, so the client hears the 552 in step. Returns the
        size received. Every chunk from the client restarts the idle timer."""
        limit = self.data_size_limit
        size = 0
        line_start = True
        while True:
            try:
                chunk = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as exc:  # a line longer than the reader holds
                chunk = await self._reader.readexactly(exc.consumed)
            except asyncio.IncompleteReadError as exc:
                raise ConnectionResetError("the client went away during DATA") from exc
            if self._deadline is not None:
                self._deadline += len(chunk) / MIN_DATA_RATE
            self._reset_timeout()
            if line_start:
                if chunk == b".\r\n":
                    return size
                if chunk.startswith(b"."):
                    chunk = chunk[1:]
            line_start = chunk.endswith(b"\r\n")
            size += len(chunk)
            if limit is None or size <= limit:
                out.write(chunk)


def _networks(allow: Sequence[str]) -> list[Network]:
    networks = []
    for entry in allow:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ConfigError(
                f"intake.smtp.allow: {entry!r} is not an address or network ({exc}); e.g. 10.0.0.0/8"
            ) from exc
    return networks


def _tls(settings: SmtpIntakeSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"intake.smtp: cannot load tls_cert {settings.tls_cert} with tls_key {settings.tls_key}: {exc}; "
            "check that both are PEM files and belong together"
        ) from exc
    return context


async def start_server(handler: StoringHandler, host: str, port: int, max_bytes: int, *,
                       limits: SmtpIntakeSettings | None = None, temp_dir: Path | None = None) -> Any:  # fmt: skip
    """Listen on ``host:port``; ``limits`` as configured (the defaults when None); messages
    are received into nameless files in ``temp_dir`` (the state directory: they are patient
    data)."""
    limits = limits or SmtpIntakeSettings()
    gate = Gate(limits.max_connections, _networks(limits.allow))
    tls = _tls(limits)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: LimitedSMTP(
            handler,
            gate,
            limits.max_recipients,
            temp_dir,
            data_size_limit=max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=limits.idle_timeout_seconds,
            tls_context=tls,
            require_starttls=False,
            command_call_limit=CHATTER_LIMITS,
            loop=loop,
        ),
        host=host,
        port=port,
    )
