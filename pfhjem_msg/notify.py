"""The systemd notification protocol (``Type=notify``): a few lines, no dependency.

systemd passes a datagram socket in ``$NOTIFY_SOCKET``; the daemon says ``READY=1`` once it
serves, ``RELOADING=1`` and ``READY=1`` around a reload, ``STOPPING=1`` on the way out, and
``WATCHDOG=1`` while its rounds progress. With ``WatchdogSec=`` set, systemd passes the
interval in ``$WATCHDOG_USEC`` and kills a daemon whose pings stop. Outside systemd (no
socket) every call does nothing, so the daemon runs the same by hand and in tests.
"""

from __future__ import annotations

import os
import socket
import time

from pfhjem_msg.logs import get_logger

log = get_logger("pfhjem_msg.notify")


def _address() -> str | None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return None
    if address.startswith("@"):  # an abstract socket: the name starts with a NUL byte
        return "\0" + address[1:]
    return address


def notify(*fields: str) -> bool:
    """Send ``KEY=value`` fields to systemd; True if there was a socket to send them to.

    A failure is logged, never raised: a daemon must not stop serving because its supervisor
    cannot be told something."""
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(fields).encode("utf-8"), address)
    except OSError as exc:
        log.warning("notify.failed", fields=[f.split("=", 1)[0] for f in fields], error=exc.strerror)
        return False
    return True


def reloading() -> bool:
    """``RELOADING=1`` with the timestamp newer systemd versions require beside it."""
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")


def watchdog_seconds() -> float | None:
    """systemd's watchdog interval for this process (None: no watchdog asked for)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000
