"""Keys and proofs: the client's signing key (PEM or JWK), its JWK thumbprint (RFC 7638), and
DPoP proofs (RFC 9449) made with a key of our own.

A DPoP proof shows the token's holder is the one it was issued to: the token is bound to the
proof key's thumbprint, and each request carries a fresh proof signed with that key, naming
the method and URL and (towards the API) the hash of the token. The proof key is made anew
in each process and never written anywhere: tokens live in memory only, so a new process
simply gets a new token for its new key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pfhjem_msg.errors import ConfigError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_EC_ALGORITHMS = {
    "secp256r1": ("ES256", "P-256"),
    "secp384r1": ("ES384", "P-384"),
    "secp521r1": ("ES512", "P-521"),
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


@dataclass(frozen=True)
class SigningKey:
    """A private key with the JWS algorithm it signs with and the ``kid`` it is known by."""

    key: PrivateKey
    algorithm: str
    kid: str

    def __repr__(self) -> str:
        return f"SigningKey(algorithm={self.algorithm!r}, kid={self.kid!r})"

    @classmethod
    def of(cls, key: PrivateKey, kid: str | None = None) -> SigningKey:
        """RS256 for RSA, ES256/384/512 by curve; ``kid`` from the JWK or the key's thumbprint."""
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < 2048:
                raise ConfigError("the HelseID private key is an RSA key under 2048 bits; make a larger one")
            algorithm = "RS256"
        else:
            found = _EC_ALGORITHMS.get(key.curve.name)
            if found is None:
                raise ConfigError(
                    f"the HelseID private key is on curve {key.curve.name}; use P-256, P-384 or P-521"
                )
            algorithm = found[0]
        probe = cls(key, algorithm, "")
        return cls(key, algorithm, kid or thumbprint(probe.public_jwk()))

    def public_jwk(self) -> dict[str, str]:
        """The public half as a JWK with only the members RFC 7638 hashes (no ``kid``)."""
        public = self.key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            return {"kty": "RSA", "e": _int_b64(numbers.e), "n": _int_b64(numbers.n)}
        assert isinstance(public, ec.EllipticCurvePublicKey)
        size = (public.curve.key_size + 7) // 8
        point = public.public_numbers()
        return {
            "kty": "EC",
            "crv": _EC_ALGORITHMS[public.curve.name][1],
            "x": b64url(point.x.to_bytes(size, "big")),
            "y": b64url(point.y.to_bytes(size, "big")),
        }

    def sign(self, claims: dict[str, Any], headers: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, algorithm=self.algorithm, headers=headers)


def thumbprint(public_jwk: dict[str, str]) -> str:
    """RFC 7638: SHA-256 of the required members, sorted, without white space."""
    required = ("e", "kty", "n") if public_jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: public_jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def load_signing_key(path: Path) -> SigningKey:
    """The client's key from a PEM or JWK file. Errors name the file, never its content."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the HelseID private key {path}: {exc.strerror}; check the path"
        ) from exc
    if data.lstrip().startswith(b"{"):
        return _from_jwk(data, path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"the HelseID private key {path} is neither an unencrypted PEM private key nor a JWK; "
            "export it as PKCS#8 PEM without a password, or as the JWK registered in HelseID"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(
            f"the HelseID private key {path} is not an RSA or EC key; HelseID needs one of those"
        )
    return SigningKey.of(key)


def _from_jwk(data: bytes, path: Path) -> SigningKey:
    try:
        parsed = json.loads(data)
        if not isinstance(parsed, dict) or "d" not in parsed:
            raise ValueError("not a private JWK")
        key = jwt.PyJWK(parsed).key
    except (ValueError, jwt.PyJWKError, jwt.InvalidKeyError) as exc:
        raise ConfigError(
            f'the HelseID private key {path} is not a private RSA or EC JWK (it must hold the "d" member)'
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(
            f"the HelseID private key {path} is not an RSA or EC key; HelseID needs one of those"
        )
    kid = parsed.get("kid")
    return SigningKey.of(key, kid if isinstance(kid, str) and kid else None)


def access_token_hash(token: str) -> str:
    """``ath``: base64url of the SHA-256 of the access token's ASCII bytes."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def htu(url: str) -> str:
    """The URL a proof names: without query and fragment (RFC 9449 §4.2)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class ProofKey:
    """The process's own DPoP key (EC P-256), made on first use."""

    def __init__(self) -> None:
        self.key = SigningKey.of(ec.generate_private_key(ec.SECP256R1()))
        self.jwk = self.key.public_jwk()
        self.jkt = thumbprint(self.jwk)

    def proof(self, method: str, url: str, nonce: str | None = None, token: str | None = None) -> str:
        claims: dict[str, Any] = {
            "htm": method.upper(),
            "htu": htu(url),
            "iat": int(time.time()),
            "jti": str(uuid.uuid4()),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if token is not None:
            claims["ath"] = access_token_hash(token)
        return self.key.sign(claims, {"typ": "dpop+jwt", "jwk": self.jwk})
