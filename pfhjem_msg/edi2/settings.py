"""What the operator configures for the message service and for HelseID.

Frozen and picklable, so the settings can go to worker processes like the rest of the
configuration. The private key is a path, never the key itself, so neither ``repr`` nor a
log line nor ``config show`` can carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pfhjem_msg import __version__

API_VERSION = "2"
"""The ``api-version`` header the description of the API requires on every call."""


@dataclass(frozen=True)
class HelseIdSettings:
    token_url: str
    client_id: str
    scope: str
    private_key: Path = field(repr=False)
    """A PEM (PKCS#8 or traditional, RSA or EC) or JWK file with the client's private key:
    the key registered with the client in HelseID. Never shown."""
    dpop: bool = True
    """Sender-constrained tokens (RFC 9449), as the service expects; False only for test
    set-ups whose token server issues plain bearer tokens."""
    audience: str | None = None
    """The client assertion's ``aud``; None: the token URL. HelseID accepts its issuer URL too."""
    assertion_seconds: int = 60
    """Lifetime of a client assertion: short, it is used once."""
    renew_before_seconds: int = 60
    """Get a new token this long before the cached one expires."""
    timeout: float = 30.0

    def __repr__(self) -> str:
        return (
            f"HelseIdSettings(token_url={self.token_url!r}, client_id={self.client_id!r}, "
            f"scope={self.scope!r}, private_key=<file>, dpop={self.dpop})"
        )


@dataclass(frozen=True)
class Edi2Settings:
    base_url: str
    her_ids: tuple[int, ...]
    """Receiver HER-ids to fetch messages for (the integration defaults them to every HER-id
    of every configured municipality)."""
    helseid: HelseIdSettings
    source_system: str = f"pfhjem-msg, v{__version__}"
    """The ``nhn-source-system`` header: name and version of the client system."""
    poll_seconds: float = 10.0
    timeout: float = 30.0
    """Seconds for connecting and for each read; a timeout is a transient failure."""
    batch: int = 100
    """``MessagesToFetch`` per listing (the API allows 1 to 100)."""
    max_document_bytes: int = 64 * 1024 * 1024
    """A business document larger than this (decoded) is not stored; the service caps
    uploads at 35 MB, so this only guards against a broken answer."""
