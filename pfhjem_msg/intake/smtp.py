"""SMTP intake (aiosmtpd, in the daemon's event loop). ``250`` only after the message is on
disk in the store; ``451`` if it could not be stored, so the hub tries again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import datetime
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from pfhjem_msg import metrics
from pfhjem_msg.logs import get_logger
from pfhjem_msg.store.base import Store

log = get_logger("pfhjem_msg.intake.smtp")


class StoringHandler:
    def __init__(self, store: Store, clock: Callable[[], datetime], executor: Executor,
                 on_stored: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.store = store
        self.clock = clock
        self.executor = executor
        self.on_stored = on_stored
        self.last_intake: datetime | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or (
            envelope.content if isinstance(envelope.content, bytes) else str(envelope.content or "").encode()
        )
        peer = session.peer[0] if isinstance(session.peer, tuple) else "?"
        loop = asyncio.get_running_loop()
        try:
            accepted = await loop.run_in_executor(
                self.executor, self.store.accept, raw, f"smtp:{peer}", self.clock()
            )
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


async def start_server(handler: StoringHandler, host: str, port: int, max_bytes: int) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(handler, data_size_limit=max_bytes, enable_SMTPUTF8=True, decode_data=False),
        host=host,
        port=port,
    )
