"""A PostgreSQL URL as it may be shown: in ``config show``, in errors and in logs."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "********"


def masked(url: str) -> str:
    """The URL with any password replaced (user, host, port and database stay: they say which
    store is meant)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(a [store] url that cannot be read)"
    if password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{netloc}"))
