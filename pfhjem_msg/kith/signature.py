"""Enveloped XML signatures in MsgHead (the last child ``ds:Signature``).

A signature counts only when it covers the whole message as the product reads it (one
Reference, ``URI=""``; see ``verify``). Its certificate must be valid at the message's time;
with trust anchors (the CA certificates of Buypass and Commfides) it must chain to one of
them through real CAs (``certpath``), and with a CRL directory it must not be revoked
(``crl``). Without trust anchors a valid signature proves the message is unchanged since
signing, not who signed it; the result says so.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from lxml import etree

from pfhjem_msg.errors import ConfigError
from pfhjem_msg.kith import certpath, crl

if TYPE_CHECKING:
    from cryptography import x509
    from signxml.verifier import SignatureConfiguration

# cryptography and signxml are imported where a signature is checked or made: most messages
# carry none, and the daemon's worker processes start faster without them.

DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
MAX_BACKDATE = timedelta(days=14)
"""How far before now a message's GenDate may move the moment its certificate is judged at.
GenDate is the signer's own claim: without a bound, whoever holds the key of a certificate
that expired years ago (and has since dropped off its CA's CRL) signs today with an old
GenDate. Two weeks covers a hub's retries and a long weekend's backlog."""
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
    """S01 for a signature that does not verify or does not cover the whole message, S02 for
    a certificate that is not valid or not trusted, S03 for a revoked one, S99 when revocation
    cannot be checked."""
    weak_algorithm: bool = False
    organisation_number: str | None = None
    """The organisation number in the signing certificate, when it carries one."""
    anchored: bool = False
    """True when the certificate was checked against the configured trust anchors."""
    warnings: tuple[str, ...] = ()


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


def verify(
    kith_root: etree._Element,
    trust_anchors: Path | None = None,
    now: datetime | None = None,
    *,
    crl_dir: Path | None = None,
    message_time: datetime | None = None,
) -> SignatureResult:
    """Verify the enveloped signature of a MsgHead, if it has one.

    ``valid`` means: one signature over the whole message as read (nothing outside it that
    the product could act on), made with the key of a certificate valid at the message's time
    (``message_time``, GenDate, never later than ``now`` nor more than ``MAX_BACKDATE`` before it); with trust anchors, a certificate
    issued through real CAs by one of them; with a CRL directory, not revoked."""
    sigs = [c for c in kith_root if c.tag == f"{{{DSIG_NS}}}Signature"]
    if not sigs:
        return SignatureResult("absent")
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        return _verify_signatures(kith_root, sigs, trust_anchors, now, crl_dir, message_time)
    except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm) as exc:
        # A certificate is parsed lazily: a field the sender made impossible (a version that
        # does not exist, a key of an unknown kind, a malformed extension) surfaces only when
        # it is read, as one of these. Any of them means the signature cannot be relied on.
        return SignatureResult(
            "invalid", f"a certificate in the signature cannot be used ({type(exc).__name__})", "S02"
        )


def _verify_signatures(
    kith_root: etree._Element,
    sigs: list[etree._Element],
    trust_anchors: Path | None,
    now: datetime | None,
    crl_dir: Path | None,
    message_time: datetime | None,
) -> SignatureResult:
    if len(sigs) > 1:
        return SignatureResult(
            "invalid", f"the MsgHead carries {len(sigs)} signatures; one is allowed", "S01"
        )
    sig = sigs[0]
    shape = _reference_problem(sig)
    if shape is None:
        shape = _unsigned_text_problem(kith_root, sig)
    if shape is not None:
        return SignatureResult("invalid", shape, "S01")
    from cryptography import x509

    carried: list[x509.Certificate] = []
    for el in sig.iterfind(f"{{{DSIG_NS}}}KeyInfo/{{{DSIG_NS}}}X509Data/{{{DSIG_NS}}}X509Certificate"):
        try:
            carried.append(x509.load_der_x509_certificate(base64.b64decode("".join((el.text or "").split()))))
        except ValueError:
            return SignatureResult("invalid", "a certificate in the signature cannot be read", "S02")
    if not carried:
        return SignatureResult("invalid", "the signature carries no X.509 certificate", "S01")
    cert = _leaf(carried)
    current = now or datetime.now(UTC)
    moment = max(min(message_time, current), current - MAX_BACKDATE) if message_time is not None else current
    if not (cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc):
        return SignatureResult(
            "invalid",
            f"the signing {certpath.describe(cert)} is outside its validity period at the message's "
            f"time {moment.isoformat(timespec='seconds')}",
            "S02",
        )
    weak_key = _key_problem(cert)
    if weak_key is not None:
        return SignatureResult("invalid", weak_key, "S02")
    checked = _verify_value(kith_root, sig, cert, moment)
    if checked is not None:
        return SignatureResult("invalid", checked, "S01")
    weak = any("sha1" in (el.get("Algorithm") or "") for el in sig.iter(*_ALGORITHM_TAGS))
    org = certpath.organisation_number(cert)
    if trust_anchors is None:
        reason = "valid over the content; the certificate's issuer was not checked"
        return SignatureResult("valid", reason, weak_algorithm=weak, organisation_number=org)
    path = certpath.validate(cert, carried, trust_anchors, moment)
    if path.problem is not None:
        return SignatureResult("invalid", path.problem, "S02", organisation_number=org)
    warnings: tuple[str, ...] = ()
    if crl_dir is not None:
        revocation = crl.check(path.chain, crl_dir, current)
        if revocation.code is not None:
            return SignatureResult("invalid", revocation.problem, revocation.code, organisation_number=org)
        warnings = tuple(revocation.warnings)
    return SignatureResult(
        "valid", None, weak_algorithm=weak, organisation_number=org, anchored=True, warnings=warnings
    )


_ALGORITHM_TAGS = (f"{{{DSIG_NS}}}SignatureMethod", f"{{{DSIG_NS}}}DigestMethod")
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
CANONICAL = frozenset(
    {
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
        "http://www.w3.org/2001/10/xml-exc-c14n#",
        "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
        "http://www.w3.org/2006/12/xml-c14n11",
        "http://www.w3.org/2006/12/xml-c14n11#WithComments",
    }
)


def _reference_problem(sig: etree._Element) -> str | None:
    """Only an enveloped signature over the whole document is accepted: one Reference,
    ``URI=""``, transforms enveloped-signature and at most one canonicalisation. A Reference to
    an element by id (``URI="#..."``) signs that element only, and everything around it could
    be changed (signature wrapping)."""
    refs = list(sig.iterfind(f"{{{DSIG_NS}}}SignedInfo/{{{DSIG_NS}}}Reference"))
    if len(refs) != 1:
        return f"the signature has {len(refs)} references; one over the whole message is required"
    uri = refs[0].get("URI")
    if uri != "":
        # The URI is the sender's text and is not quoted: issues never carry values from a message.
        shown = (
            "nothing named" if uri is None else "one element by id" if uri.startswith("#") else "a resource"
        )
        return f'the signature covers {shown}, not the whole message (URI="" is required)'
    algorithms = [
        t.get("Algorithm") or "" for t in refs[0].iterfind(f"{{{DSIG_NS}}}Transforms/{{{DSIG_NS}}}Transform")
    ]
    if ENVELOPED not in algorithms:
        return "the signature is not enveloped (no enveloped-signature transform)"
    rest = [a for a in algorithms if a != ENVELOPED]
    if algorithms.count(ENVELOPED) > 1 or len(rest) > 1 or any(a not in CANONICAL for a in rest):
        return (
            "the signature's reference has transforms other than enveloped-signature and one canonicalisation"
        )
    return None


def _unsigned_text_problem(kith_root: etree._Element, sig: etree._Element) -> str | None:
    """A comment or processing instruction inside a text splits it: the product reads the part
    before it, while the signature (which drops comments) covers the joined text. An attacker
    can insert one after signing to cut an id or a name short, so none may sit inside text."""
    for node in kith_root.iter(etree.Comment, etree.ProcessingInstruction):
        if node.getparent() is None or sig in node.iterancestors():
            continue
        before = node.getprevious()
        left = before.tail if before is not None else node.getparent().text
        if (left and left.strip()) or (node.tail and node.tail.strip()):
            return "a comment or processing instruction inside a text value is not covered by the signature"
    return None


MIN_RSA_BITS = 2048


def _key_problem(cert: x509.Certificate) -> str | None:
    """A signing key anyone with some computing power could forge with is no signature: RSA
    under 2048 bits, elliptic curves under 256, DSA. The path check holds the CAs to this,
    not the leaf."""
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

    key = cert.public_key()
    what = f"the signing {certpath.describe(cert)}"
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"{what} has an RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size < 256:
        return f"{what} has an elliptic-curve key of {key.curve.key_size} bits; at least 256 are required"
    if isinstance(key, dsa.DSAPublicKey):
        return f"{what} has a DSA key; RSA or an elliptic-curve key is required"
    return None


def _leaf(carried: list[x509.Certificate]) -> x509.Certificate:
    """The signer's certificate: the one no other carried certificate names as its issuer
    (KeyInfo may carry the intermediates too, in any order)."""
    issuers = {c.issuer for c in carried}
    return next((c for c in carried if c.subject not in issuers or len(carried) == 1), carried[0])


def _verify_value(
    kith_root: etree._Element, sig: etree._Element, cert: x509.Certificate, moment: datetime
) -> str | None:
    """Check the signature value and digest with signxml, then that what was signed is the
    message as read, canonical form for canonical form (belt and braces over the reference
    check: the product acts only on what was signed). None when it holds."""
    from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature
    from signxml.verifier import XMLVerifier

    try:
        result = XMLVerifier().verify(
            etree.tostring(kith_root),
            x509_cert=cert,
            expect_config=replace(_accepted(), verification_time=moment),
        )
    except InvalidDigest:
        return "the message was changed after it was signed (the digest does not match)"
    except InvalidCertificate:
        return "the signing certificate is not usable at the message's time"
    except (InvalidSignature, InvalidInput) as exc:
        return f"the signature does not verify ({_SUBJECT.sub('', str(exc))})"[:200]
    except Exception as exc:  # a malformed signature must not stop the verdict
        return f"the signature cannot be checked ({type(exc).__name__})"
    signed = (
        result.signed_data if not isinstance(result, list) and isinstance(result.signed_data, bytes) else None
    )
    if signed is None or signed != _canonical_without(kith_root, sig):
        return "what the signature covers is not the message as read"
    return None


_SUBJECT = re.compile(r"\(subject=.*?\)")


def _canonical_without(kith_root: etree._Element, sig: etree._Element) -> bytes:
    """The message as the product reads it, minus its signature, in the canonical form the
    signature's reference names (signxml's default, inclusive c14n 1.0, if none; signxml
    canonicalises 1.1 as 1.0, and so must this)."""
    copy = etree.fromstring(etree.tostring(kith_root))
    own = next(c for c in copy if c.tag == f"{{{DSIG_NS}}}Signature")
    previous, parent = own.getprevious(), own.getparent()
    assert parent is not None
    if own.tail:  # keep the text after the signature, as the enveloped transform does
        if previous is not None:
            previous.tail = (previous.tail or "") + own.tail
        else:
            parent.text = (parent.text or "") + own.tail
    parent.remove(own)
    method = next(
        (
            t.get("Algorithm") or ""
            for t in sig.iter(f"{{{DSIG_NS}}}Transform")
            if t.get("Algorithm") in CANONICAL
        ),
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    )
    prefixes_el = next(
        (t.find("{http://www.w3.org/2001/10/xml-exc-c14n#}InclusiveNamespaces") for t in sig.iter(f"{{{DSIG_NS}}}Transform")
         if t.get("Algorithm") == method),
        None,
    )  # fmt: skip
    prefixes = (prefixes_el.get("PrefixList") or "").split() if prefixes_el is not None else None
    canonical: bytes = etree.tostring(
        copy,
        method="c14n",
        exclusive="exc-c14n" in method,
        with_comments=method.endswith("#WithComments"),
        inclusive_ns_prefixes=prefixes,
    )
    return canonical


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
