"""Whether a signing certificate was issued, through real CAs, by one of the operator's trust
anchors, at the time the message was made; and which organisation it belongs to.

The path is built and checked by ``cryptography.x509.verification``: each link's signature,
name chaining, CA:TRUE basicConstraints with path length, keyCertSign on every issuer, RSA of
at least 2048 bits, accepted signature algorithms, and the validity dates of every certificate
at the message's time (Web PKI rules for the CAs, RFC 5280 in substance). Its client verifier
is meant for TLS, but its end-entity rules can be replaced: here they ask for what a document
signature needs (digitalSignature or nonRepudiation, not a CA, no critical extension we do not
understand) instead of a TLS extended key usage, which enterprise signing certificates lack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

MAX_INTERMEDIATES = 3
"""Buypass and Commfides issue through one intermediate; a few more is room, not a limit
anyone legitimate reaches."""
_ORG_IDENTIFIER = re.compile(r"NTRNO-(\d{9})")
_ORG_NUMBER = re.compile(r"\d{9}")
_SUBJECT_PART = re.compile(r"\s*\(encountered processing.*$|<Certificate\(.*?\)>", re.DOTALL)


@dataclass(frozen=True)
class PathResult:
    chain: tuple[x509.Certificate, ...] = ()
    """Leaf first, trust anchor last; empty when no path was found."""
    problem: str | None = None


def anchors(path: Path) -> tuple[x509.Certificate, ...]:
    """The CA certificates in a PEM file, read again only when the file changes (operations
    may replace it while the daemon runs)."""
    try:
        st = path.stat()
    except OSError:
        return ()
    return _anchors(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=4)  # a refreshed file replaces the entry; old ones must not pile up
def _anchors(path: Path, _mtime_ns: int, _size: int) -> tuple[x509.Certificate, ...]:
    from cryptography import x509

    try:
        return tuple(x509.load_pem_x509_certificates(path.read_bytes()))
    except (OSError, ValueError):
        return ()


def validate(
    leaf: x509.Certificate, carried: list[x509.Certificate], anchors_file: Path, moment: datetime
) -> PathResult:
    """A path from ``leaf`` through certificates the message carries to an anchor, valid at
    ``moment``; or why there is none. The reason names no certificate subject (a personal
    certificate's subject is a person)."""
    from cryptography import x509
    from cryptography.x509.verification import (
        Criticality,
        ExtensionPolicy,
        PolicyBuilder,
        Store,
        VerificationError,
    )

    trusted = anchors(anchors_file)
    if not trusted:
        return PathResult(
            problem=f"the trust anchors file {anchors_file} holds no readable certificate; "
            "an operator must fix [kith] trust_anchors"
        )
    ee_policy = (
        ExtensionPolicy.permit_all()
        .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _signing_usage)
        .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, _not_a_ca)
    )
    verifier = (
        PolicyBuilder()
        .store(Store(list(trusted)))
        .time(moment)
        .max_chain_depth(MAX_INTERMEDIATES)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
        .build_client_verifier()
    )
    intermediates = [c for c in carried if c != leaf]
    try:
        verified = verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        detail = _SUBJECT_PART.sub("", str(exc)).strip()[:160]
        return PathResult(problem=f"the signing certificate does not chain to a trust anchor ({detail})")
    return PathResult(chain=tuple(verified.chain))


def _signing_usage(_policy: object, cert: x509.Certificate, usage: x509.KeyUsage) -> None:
    """A document signature needs digitalSignature or nonRepudiation; and a critical
    extension this check does not know must refuse the certificate (RFC 5280 4.2)."""
    from cryptography import x509

    if not (usage.digital_signature or usage.content_commitment):
        raise ValueError("the leaf's keyUsage allows neither digitalSignature nor nonRepudiation")
    for ext in cert.extensions:
        if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            raise ValueError(f"the leaf has an unknown critical extension {ext.oid.dotted_string}")


def _not_a_ca(_policy: object, _cert: x509.Certificate, constraints: x509.BasicConstraints | None) -> None:
    if constraints is not None and constraints.ca:
        raise ValueError("the leaf is a CA certificate, not a signing certificate")


def organisation_number(cert: x509.Certificate) -> str | None:
    """The Norwegian organisation number an enterprise certificate is issued to: subject
    organizationIdentifier ``NTRNO-<9 digits>`` (newer, eIDAS style) or a 9-digit subject
    serialNumber (older). A personal certificate's serialNumber is a PID, not 9 digits."""
    from cryptography.x509.oid import NameOID

    for attr in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER):
        value = attr.value if isinstance(attr.value, str) else attr.value.decode("ascii", "replace")
        m = _ORG_IDENTIFIER.fullmatch(value.strip())
        if m:
            return m.group(1)
    for attr in cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER):
        value = attr.value if isinstance(attr.value, str) else attr.value.decode("ascii", "replace")
        if _ORG_NUMBER.fullmatch(value.strip()):
            return value.strip()
    return None


def describe(cert: x509.Certificate) -> str:
    """How a certificate is named in reasons and logs: serial and organisation number, never
    the subject (which for a personal certificate is a person)."""
    org = organisation_number(cert)
    return f"certificate serial {cert.serial_number:x}" + (f" (organisation {org})" if org else "")
