"""Enveloped XML signatures in MsgHead (the last child ``ds:Signature``).

Verification checks the signature against the certificate the message carries, and, when
the operator configures trust anchors (the CA certificates of Buypass and Commfides), that
the certificate chains to one of them. Without trust anchors a valid signature proves the
message is unchanged since signing, not who signed it; the result says so.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from lxml import etree

from pfhjem_msg.errors import ConfigError

if TYPE_CHECKING:
    from cryptography import x509
    from signxml.verifier import SignatureConfiguration

# cryptography and signxml are imported where a signature is checked or made: most messages
# carry none, and the daemon's worker processes start faster without them.

DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
SignatureStatus = Literal["absent", "valid", "invalid"]


@cache
def _accepted() -> SignatureConfiguration:
    """Older signed KITH messages use RSA-SHA1 and SHA-1 digests; they are accepted with a note."""
    from signxml.algorithms import DigestAlgorithm, SignatureMethod
    from signxml.verifier import SignatureConfiguration

    return SignatureConfiguration(
        require_x509=True,
        location="./",
        expect_references=1,
        signature_methods=frozenset(SignatureMethod) - {m for m in SignatureMethod if "hmac" in m.value},
        digest_algorithms=frozenset(DigestAlgorithm),
    )


@dataclass(frozen=True)
class SenderTrust:
    """What the operator knows of one sender (by HER-id): the organisation number its
    enterprise certificate must carry, and whether its messages must be signed."""

    her_id: str
    organisation_number: str | None = None
    require_signature: bool | None = None
    """None: the global ``[kith] require_signature``."""


@dataclass(frozen=True)
class SignatureResult:
    status: SignatureStatus
    reason: str | None = None
    apprec_code: str | None = None
    """S01 for a bad signature, S02 for a certificate that is not valid."""
    weak_algorithm: bool = False


@dataclass(frozen=True)
class SigningKey:
    """The key and certificate the product signs what it sends with."""

    key_pem: bytes
    cert_pem: bytes

    @classmethod
    def from_files(cls, key: Path, cert: Path) -> SigningKey:
        try:
            return cls(key.read_bytes(), cert.read_bytes())
        except OSError as exc:
            raise ConfigError(
                f"cannot read the signing key or certificate ({exc.strerror}: "
                f"{exc.filename}); check [signing] in the configuration"
            ) from exc


def signature_element(kith_root: etree._Element) -> etree._Element | None:
    for c in kith_root:
        if c.tag == f"{{{DSIG_NS}}}Signature":
            return c
    return None


def verify(
    kith_root: etree._Element, trust_anchors: Path | None = None, now: datetime | None = None
) -> SignatureResult:
    """Verify the enveloped signature of a MsgHead, if it has one."""
    sig = signature_element(kith_root)
    if sig is None:
        return SignatureResult("absent")
    from cryptography import x509
    from signxml.exceptions import InvalidCertificate, InvalidInput, InvalidSignature
    from signxml.verifier import XMLVerifier

    cert_el = next(sig.iter(f"{{{DSIG_NS}}}X509Certificate"), None)
    if cert_el is None or not (cert_el.text or "").strip():
        return SignatureResult("invalid", "the signature carries no X.509 certificate", "S01")
    try:
        der = base64.b64decode("".join((cert_el.text or "").split()))
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return SignatureResult("invalid", "the signature's certificate cannot be read", "S02")
    moment = now or datetime.now(UTC)
    if not (cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc):
        return SignatureResult("invalid", "the signing certificate is outside its validity period", "S02")
    data = etree.tostring(kith_root)
    signature_method = next(sig.iter(f"{{{DSIG_NS}}}SignatureMethod"), None)
    weak = "sha1" in (signature_method.get("Algorithm", "") if signature_method is not None else "")
    try:
        XMLVerifier().verify(data, x509_cert=cert, expect_config=_accepted())
    except (InvalidSignature, InvalidInput, InvalidCertificate) as exc:
        return SignatureResult("invalid", f"the signature does not verify ({exc})"[:200], "S01")
    except Exception as exc:  # a malformed signature must not stop the verdict
        return SignatureResult("invalid", f"the signature cannot be checked ({type(exc).__name__})", "S01")
    if trust_anchors is not None and not _issued_by_anchor(cert, sig, trust_anchors):
        return SignatureResult("invalid", "the signing certificate does not chain to a trusted issuer", "S02")
    reason = None if trust_anchors else "valid over the content; the certificate's issuer was not checked"
    return SignatureResult("valid", reason, weak_algorithm=weak)


def _issued_by_anchor(cert: x509.Certificate, sig: etree._Element, anchors_file: Path) -> bool:
    """Whether ``cert`` chains, through certificates the signature carries, to an anchor."""
    from cryptography import x509

    try:
        anchors = x509.load_pem_x509_certificates(anchors_file.read_bytes())
    except (OSError, ValueError):
        return False
    carried = []
    for el in sig.iter(f"{{{DSIG_NS}}}X509Certificate"):
        try:
            carried.append(x509.load_der_x509_certificate(base64.b64decode("".join((el.text or "").split()))))
        except ValueError:
            continue
    current = cert
    for _ in range(len(carried) + 1):
        for anchor in anchors:
            if _issued(current, anchor):
                return True
        parent = next((c for c in carried if c != current and _issued(current, c)), None)
        if parent is None:
            return False
        current = parent
    return False


def _issued(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    from cryptography.exceptions import InvalidSignature as InvalidSignatureError

    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignatureError):
        return False
    return True


def sign(root: etree._Element, key: SigningKey) -> etree._Element:
    """Sign a MsgHead we send: enveloped, exclusive c14n, RSA-SHA256, certificate included.
    The signature becomes MsgHead's last child, where the standard puts it."""
    from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod
    from signxml.signer import XMLSigner

    signer = XMLSigner(
        signature_algorithm=SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    signer.namespaces = {"ds": DSIG_NS}
    signed: etree._Element = signer.sign(root, key=key.key_pem, cert=key.cert_pem.decode())
    return signed
