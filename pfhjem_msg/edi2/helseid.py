"""Access tokens from HelseID: client credentials with a signed client assertion
(``private_key_jwt``, RFC 7523) and, by default, DPoP-bound tokens (RFC 9449).

A token is kept in memory and reused until ``renew_before_seconds`` before it expires; the API
client asks for a fresh one (``renew``) once when the service answers 401 or 403. The token
server may ask for a DPoP nonce (``use_dpop_nonce`` with a ``DPoP-Nonce`` header): the request
is then made once more with that nonce, and the nonce is kept for the next request.

Nothing secret is logged or put into an exception: not the key, not the assertion, not the
token. Errors carry the HTTP status and the OAuth error code, which are what an operator needs
to fix the client's registration.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from pfhjem_msg.edi2.dpop import ProofKey, SigningKey, load_signing_key
from pfhjem_msg.edi2.settings import HelseIdSettings
from pfhjem_msg.errors import PfhjemError, TransientDeliveryError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class Edi2AuthError(PfhjemError):
    """HelseID or the service refuses our credentials: retrying will not help until an operator
    fixes the client's registration, key or scope (or the service's access list)."""


@dataclass(frozen=True)
class Token:
    value: str
    kind: str
    """``DPoP`` or ``Bearer``: the scheme of the ``Authorization`` header."""
    expires_at: float

    def __repr__(self) -> str:
        return f"Token(kind={self.kind!r}, expires_at={self.expires_at})"


class TokenClient:
    def __init__(self, settings: HelseIdSettings, http: httpx.Client, key: SigningKey | None = None,
                 proof_key: ProofKey | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.http = http
        self.key = key or load_signing_key(settings.private_key)
        self.proof_key = (proof_key or ProofKey()) if settings.dpop else None
        self._nonce: str | None = None
        self._token: Token | None = None
        self._lock = threading.Lock()
        self.requests = 0
        """Token requests made (including nonce retries): for status and tests."""

    def token(self) -> Token:
        """The cached token, or a new one when it is about to expire."""
        with self._lock:
            if (
                self._token is None
                or time.time() >= self._token.expires_at - self.settings.renew_before_seconds
            ):
                self._token = self._fetch()
            return self._token

    def renew(self, stale: Token) -> Token:
        """A new token instead of ``stale`` (the service refused it); if another thread already
        renewed it, that one is used."""
        with self._lock:
            if self._token is None or self._token.value == stale.value:
                self._token = self._fetch()
            return self._token

    def assertion(self) -> str:
        """The client assertion: short-lived, used once (its ``jti`` is fresh each time)."""
        now = int(time.time())
        claims = {
            "iss": self.settings.client_id,
            "sub": self.settings.client_id,
            "aud": self.settings.audience or self.settings.token_url,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + self.settings.assertion_seconds,
        }
        return self.key.sign(claims, {"typ": "client-authentication+jwt", "kid": self.key.kid})

    def _fetch(self) -> Token:
        for _ in range(2):  # the second time with the nonce the server asked for
            headers = {"Accept": "application/json"}
            if self.proof_key is not None:
                headers["DPoP"] = self.proof_key.proof("POST", self.settings.token_url, self._nonce)
            form = {
                "grant_type": "client_credentials",
                "client_id": self.settings.client_id,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(),
                "scope": self.settings.scope,
            }
            self.requests += 1
            try:
                response = self.http.post(self.settings.token_url, data=form, headers=headers,
                                          timeout=self.settings.timeout)  # fmt: skip
            except httpx.TimeoutException as exc:
                raise TransientDeliveryError(
                    f"HelseID did not answer in time at {self.settings.token_url}"
                ) from exc
            except httpx.TransportError as exc:
                raise TransientDeliveryError(
                    f"cannot reach HelseID at {self.settings.token_url} ({type(exc).__name__})"
                ) from exc
            nonce = response.headers.get("DPoP-Nonce")
            if nonce:
                self._nonce = nonce
            body = _json(response)
            if response.status_code == 400 and body.get("error") == "use_dpop_nonce" and nonce:
                continue
            return self._token_from(response, body)
        raise Edi2AuthError(
            f"HelseID at {self.settings.token_url} asked for a DPoP nonce twice in a row; "
            "check the clock of this machine and the client's DPoP settings in HelseID"
        )

    def _token_from(self, response: httpx.Response, body: dict[str, Any]) -> Token:
        status = response.status_code
        if status >= 500 or status == 429:
            raise TransientDeliveryError(f"HelseID answered {status} at {self.settings.token_url}")
        error = body.get("error")
        if status != 200 or not isinstance(body.get("access_token"), str):
            code = error if isinstance(error, str) else "no error code"
            raise Edi2AuthError(
                f"HelseID refused a token for client {self.settings.client_id} ({status}, {code[:80]}); "
                "check the client id, the registered public key, the scope and this machine's clock"
            )
        kind = str(body.get("token_type") or "Bearer")
        expected = "DPoP" if self.proof_key is not None else "Bearer"
        if kind.lower() != expected.lower():
            raise Edi2AuthError(
                f"HelseID issued a {kind[:20]} token to client {self.settings.client_id} where {expected} was "
                "asked for; set dpop in [edi2.helseid] to match the client's registration"
            )
        lifetime = body.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 300.0
        return Token(body["access_token"], expected, time.time() + seconds)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
