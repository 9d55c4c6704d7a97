"""Enveloped signatures: verified when present, produced with a configured key. Certificates
are made by the test."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree

from pfhjem_msg.kith import gpcopy
from pfhjem_msg.kith.schemas import SchemaSet
from pfhjem_msg.kith.signature import SigningKey, sign, verify
from pfhjem_msg.kith.verdict import examine
from tests.conftest import SAMPLES


def _cert(name: str, key, issuer_name=None, issuer_key=None, days=3650, start=None, ca=False):  # type: ignore[no-untyped-def]
    start = start or dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name or name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key or key, hashes.SHA256())


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _signing(key, cert) -> SigningKey:  # type: ignore[no-untyped-def]
    return SigningKey(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )


def _message() -> etree._Element:
    return etree.fromstring((SAMPLES / "dlg11-marked-tema.xml").read_bytes())


def test_absent_when_unsigned() -> None:
    assert verify(_message()).status == "absent"


def test_sign_then_verify_and_tamper() -> None:
    key = _key()
    signed = sign(_message(), _signing(key, _cert("Fjordvik kommune", key)))
    assert etree.QName(signed[-1]).localname == "Signature"
    result = verify(etree.fromstring(etree.tostring(signed)))
    assert result.status == "valid" and result.reason and "issuer was not checked" in result.reason
    tampered = etree.tostring(signed).replace(b"Tildelingskontoret", b"Tildelingskontor X")
    bad = verify(etree.fromstring(tampered))
    assert bad.status == "invalid" and bad.apprec_code == "S01"


def test_expired_certificate_is_s02() -> None:
    key = _key()
    old = _cert("old", key, start=dt.datetime(2015, 1, 1, tzinfo=dt.UTC), days=365)
    signed = sign(_message(), _signing(key, old))
    result = verify(etree.fromstring(etree.tostring(signed)))
    assert result.status == "invalid" and result.apprec_code == "S02"


def test_trust_anchors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ca_key, leaf_key, other_key = _key(), _key(), _key()
    ca = _cert("Test CA", ca_key, ca=True)
    leaf = _cert("Signer", leaf_key, issuer_name="Test CA", issuer_key=ca_key)
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    signed = etree.tostring(sign(_message(), _signing(leaf_key, leaf)))
    trusted = verify(etree.fromstring(signed), anchors)
    assert trusted.status == "valid" and trusted.reason is None
    stranger = _cert("Stranger", other_key)
    other = etree.tostring(sign(_message(), _signing(other_key, stranger)))
    untrusted = verify(etree.fromstring(other), anchors)
    assert untrusted.status == "invalid" and untrusted.apprec_code == "S02"


def test_signature_without_certificate_is_invalid() -> None:
    root = _message()
    sig = etree.SubElement(root, "{http://www.w3.org/2000/09/xmldsig#}Signature")
    etree.SubElement(sig, "{http://www.w3.org/2000/09/xmldsig#}SignedInfo")
    assert verify(root).status == "invalid"


def test_gp_copy_is_signed_with_the_configured_key(official_schemas: SchemaSet) -> None:
    """What the product sends carries a signature that verifies, and stays schema-valid."""
    key = _key()
    original = examine((SAMPLES / "dlg11-marked-attachment.xml").read_bytes())
    assert original.message is not None
    sender = gpcopy.Party("Fjordvik kommune", "8300001", "Tildelingskontoret", "8300010")
    gp = gpcopy.GPAddress("Fjordvik legesenter", "8200001", "Kari Lege", "9000001")
    _, xml = gpcopy.build(original.message, sender, gp, dt.datetime.now(dt.UTC), original.root,
                          _signing(key, _cert("Fjordvik kommune", key)))  # fmt: skip
    root = etree.fromstring(xml)
    assert verify(root).status == "valid"
    assert official_schemas.validate(root) == []
    tampered = etree.fromstring(xml.replace(b"Fjordvik legesenter", b"Fjordvik legesentre"))
    assert verify(tampered).status == "invalid"
