"""Logging with structlog: JSON lines when not on a terminal, readable lines on one.

Every line about a message carries our id, the MsgId, the type and the HER-ids; never a
national id, a name, an address, a diagnosis, free text or payload. Callers pass those
fields only; ``_refuse_payload`` drops any value that looks like a national id as a guard.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_NATIONAL_ID = re.compile(r"(?<!\d)\d{11}(?!\d)")


def mask_national_ids(value: str) -> str:
    """``value`` with every run of exactly 11 digits (a national id's shape) masked: for the
    identifiers a sender writes (MsgId, HER-ids), which are shown to operators and logged but
    have been seen to carry a national id."""
    return _NATIONAL_ID.sub("[masked]", value) if _NATIONAL_ID.search(value) else value


def _refuse_payload(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if isinstance(value, str):
            event[key] = mask_national_ids(value)
    return event


_SET_UP: tuple[str, bool] | None = None


def configure(level: str = "info", json: bool | None = None, stream: Any = None) -> None:
    global _SET_UP
    stream = stream or sys.stderr
    as_json = (not stream.isatty()) if json is None else json
    _SET_UP = (level, as_json) if stream is sys.stderr else None
    renderer: Any = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _refuse_payload,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,  # binding per call costs more than the line itself
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def set_up() -> tuple[str, bool] | None:
    """The level and format this process logs to stderr with, for a spawned worker process to
    log the same way (a forked one inherits it): the journal then holds one format only."""
    return _SET_UP
