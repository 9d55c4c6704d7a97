"""A PostgreSQL URL as it may be shown: in ``config show``, in errors and in logs."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

MASK = "********"
SECRET_PARAMETERS = ("password", "sslpassword")
"""Query parameters of a libpq URL that hold a secret (``?password=...`` works like the
password before the host)."""


def masked(url: str) -> str:
    """The URL with any password replaced (user, host, port and database stay: they say which
    store is meant)."""
    try:
        parts = urlsplit(url)
        password = parts.password
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "(a [store] url that cannot be read)"
    if any(k.lower() in SECRET_PARAMETERS for k, _ in query):
        shown = [(k, MASK if k.lower() in SECRET_PARAMETERS else v) for k, v in query]
        parts = parts._replace(query=urlencode(shown, safe="*"))
    if password is not None:
        netloc = parts.netloc.rpartition("@")[2]
        user = parts.netloc.rpartition("@")[0].partition(":")[0]
        parts = parts._replace(netloc=f"{user}:{MASK}@{netloc}")
    return urlunsplit(parts)


def secrets_in(url: str) -> list[str]:
    """Every form in which the URL's secrets may appear in a message (as written, and decoded),
    longest first, so that text quoting them can be masked."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        raw = parts.netloc.rpartition("@")[0].partition(":")[2] if "@" in parts.netloc else ""
        values = [raw] + [v for k, v in parse_qsl(parts.query, keep_blank_values=True)
                          if k.lower() in SECRET_PARAMETERS]  # fmt: skip
        for raw_query in parts.query.split("&"):
            key, _, value = raw_query.partition("=")
            if unquote(key).lower() in SECRET_PARAMETERS:
                values.append(value)
    except ValueError:
        return []
    for value in values:
        if value:
            found.update((value, unquote(value)))
    return sorted((s for s in found if s), key=len, reverse=True)
