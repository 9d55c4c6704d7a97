"""Attacks on signed messages that the first round of fixes let through, and the variants
that held, through the daemon's own decision path (settings file → Drafter → verdict →
AppRec). Certificates, CAs and CRLs are made here; nothing is mocked."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import XMLSigner
from signxml.algorithms import DigestAlgorithm, SignatureMethod

from pfhjem_msg.drafting import Draft
from pfhjem_msg.kith.verdict import examine
from tests.conftest import SAMPLES
from tests.test_signature import (
    CA_USAGE,
    ORG,
    SIGNING_USAGE,
    Pki,
    ca_key,
    leaf_key,
    make_cert,
    message,
    now,
    signed,
    subject_name,
)
from tests.test_signature_attacks import drafter, outcome, sub

ENVELOPED = b'<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'


def _signed_with(cert: x509.Certificate, key: rsa.RSAPrivateKey, *chain: x509.Certificate) -> bytes:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    certs = [c.public_bytes(serialization.Encoding.PEM).decode() for c in (cert, *chain)]
    signer = XMLSigner(
        signature_algorithm=SignatureMethod.RSA_SHA256, digest_algorithm=DigestAlgorithm.SHA256
    )
    return etree.tostring(signer.sign(message(), key=pem, cert=certs))


# -- holes found and fixed ----------------------------------------------------------------------


def test_attack_backdated_gendate_revives_a_certificate_expired_long_ago(tmp_path: Path) -> None:
    """Whoever holds the key of a certificate that expired over a year ago (and so has left
    its CA's CRL) signs a message today and writes a GenDate from when it was valid."""
    pki = Pki(inter_start=now() - dt.timedelta(days=1500))
    expired = pki.leaf(start=now() - dt.timedelta(days=800), days=365)
    backdated = signed(expired, pki.inter, root=message(gen_date=now() - dt.timedelta(days=600)))
    d = drafter(tmp_path, pki, crl=pki.crl_dir(sub(tmp_path, "crl")), require=True)
    assert outcome(d, backdated) == "2 S02"
    assert outcome(d, signed(pki.leaf(), pki.inter)) == "1", "a current certificate is fine"


def test_attack_rsa_1024_signing_key(tmp_path: Path) -> None:
    """The CAs are held to 2048-bit RSA by the path check; the leaf was not."""
    pki = Pki()
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert = make_cert(subject_name("Helse Vestfjord HF signering", ORG), weak.public_key(), pki.inter_name,
                     pki.inter_key, ca=False, usage=SIGNING_USAGE)  # fmt: skip
    d = drafter(tmp_path, pki, require=True)
    assert outcome(d, _signed_with(cert, weak, pki.inter)) == "2 S02"
    assert "1024 bits" in (
        examine(_signed_with(cert, weak, pki.inter), "m", d.options).signature.reason or ""
    )


def test_attack_exempt_department_under_a_hospital_that_must_sign(tmp_path: Path) -> None:
    """The sender's levels are the sender's own words: an unsigned message naming a hospital
    that must sign, with an exempt HER-id as its department, must still be refused."""
    pki = Pki()
    senders = (
        '[[kith.sender]]\nher_id = "8100001"\nrequire_signature = true\n'
        '[[kith.sender]]\nher_id = "8100020"\nrequire_signature = false\n'
    )
    unsigned = etree.tostring(message())
    assert outcome(drafter(tmp_path, pki, senders=senders), unsigned) == "2 S01"
    alone = '[[kith.sender]]\nher_id = "8100020"\nrequire_signature = false\n'
    assert outcome(drafter(sub(tmp_path, "exempt"), pki, require=True, senders=alone), unsigned) == "1", (
        "an exemption alone still exempts"
    )


def test_attack_unsigned_apprec_when_signatures_are_required_is_flagged(tmp_path: Path) -> None:
    pki = Pki()
    forged = (SAMPLES / "apprec11-ok.xml").read_bytes()
    verdict = examine(forged, "m", drafter(tmp_path, pki, require=True).options)
    assert "SIGNATURE_MISSING" in {i.code for i in verdict.issues}
    relaxed = examine(forged, "m", drafter(sub(tmp_path, "off"), pki, require=False).options)
    assert not relaxed.issues


def test_attack_forged_unsigned_apprec_settles_what_we_sent(tmp_path: Path) -> None:
    draft = drafter(tmp_path, Pki(), require=True).draft((SAMPLES / "apprec11-ok.xml").read_bytes(), 1, now())
    assert isinstance(draft, Draft)
    assert draft.receipt is None
    held = [t for t in draft.change.steps if t.to_state == "held"]
    assert held and "S01" in held[0].reason, draft.change.steps


# -- variants that held -------------------------------------------------------------------------


def test_attack_second_signature_placed_first(tmp_path: Path) -> None:
    pki = Pki()
    root = etree.fromstring(signed(pki.leaf(), pki.inter))
    root.insert(0, copy.deepcopy(root[-1]))
    assert outcome(drafter(tmp_path, pki), etree.tostring(root)) == "2 S01"


@pytest.mark.parametrize(
    "transform",
    [
        b'<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xslt-19991116"><xsl:stylesheet '
        b'xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0"/></ds:Transform>',
        b'<ds:Transform Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"><ds:XPath>false()</ds:XPath>'
        b"</ds:Transform>",
    ],
    ids=["xslt", "xpath"],
)
def test_attack_xslt_or_xpath_transform_in_the_reference(tmp_path: Path, transform: bytes) -> None:
    pki = Pki()
    attacked = signed(pki.leaf(), pki.inter).replace(ENVELOPED, ENVELOPED + transform)
    assert outcome(drafter(tmp_path, pki), attacked) == "2 S01"


def test_attack_certificate_chain_with_a_loop(tmp_path: Path) -> None:
    a_key, b_key = ca_key(), ca_key()
    a_name, b_name = subject_name("Loop A CA"), subject_name("Loop B CA")
    a = make_cert(a_name, a_key.public_key(), b_name, b_key, ca=True, usage=CA_USAGE)
    b = make_cert(b_name, b_key.public_key(), a_name, a_key, ca=True, usage=CA_USAGE)
    leaf = make_cert(subject_name("Helse Vestfjord HF signering", ORG), leaf_key().public_key(), a_name, a_key,
                     ca=False, usage=SIGNING_USAGE)  # fmt: skip
    assert outcome(drafter(tmp_path, Pki()), signed(leaf, a, b)) == "2 S02"


def test_attack_organisation_number_in_ou_instead_of_serial_number(tmp_path: Path) -> None:
    pki = Pki()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "x"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ORG),
        ]
    )
    cert = make_cert(
        name, leaf_key().public_key(), pki.inter_name, pki.inter_key, ca=False, usage=SIGNING_USAGE
    )
    assert outcome(drafter(tmp_path, pki), signed(cert, pki.inter)) == "2 S02"


def test_attack_crl_named_after_the_issuer_but_signed_by_its_root(tmp_path: Path) -> None:
    """A CRL listing nothing, with the issuing CA's name, signed by a real CA of the hierarchy
    that is not the issuer: it clears nobody."""
    pki = Pki()
    leaf = pki.leaf()
    d = pki.crl_dir(tmp_path, revoked=[leaf])
    empty = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.inter_name)
        .last_update(now() - dt.timedelta(hours=1))
        .next_update(now() + dt.timedelta(days=3))
        .sign(pki.root_key, hashes.SHA256())
    )
    (d / "issuing.crl").write_bytes(empty.public_bytes(serialization.Encoding.DER))
    assert outcome(drafter(tmp_path, pki, crl=d), signed(leaf, pki.inter)) == "2 S99"


def test_attack_crl_of_another_issuer_only(tmp_path: Path) -> None:
    pki, other = Pki(), Pki("Other")
    d = tmp_path / "crl"
    d.mkdir()
    (d / "other.crl").write_bytes(other.crl([]))
    (d / "root.crl").write_bytes(pki.crl([], by_root=True))
    assert outcome(drafter(tmp_path, pki, crl=d), signed(pki.leaf(), pki.inter)) == "2 S99"
