"""Enveloped signatures: verified when present, produced with a configured key. The tests
build their own CA hierarchies (root, issuing CA, leaf); the helpers here are shared with
``test_signature_attacks.py``."""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree

from pfhjem_msg.kith import certpath, crl, gpcopy
from pfhjem_msg.kith.schemas import SchemaSet
from pfhjem_msg.kith.signature import SigningKey, sign, verify
from pfhjem_msg.kith.verdict import examine
from tests.conftest import SAMPLES

ORG = "974633574"
"""The sender's organisation number in these tests (Helse Vestfjord HF)."""
MH = "{http://www.kith.no/xmlstds/msghead/2006-05-24}"
CaKey = ec.EllipticCurvePrivateKey


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@cache
def leaf_key() -> rsa.RSAPrivateKey:
    """One RSA key for every leaf (the product signs RSA-SHA256); making keys is slow."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ca_key() -> CaKey:
    return ec.generate_private_key(ec.SECP256R1())


def subject_name(cn: str, org: str | None = None, org_as: str = "serial") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org is not None and org_as == "serial":
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, org))
    elif org is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, f"NTRNO-{org}"))
    return x509.Name(attrs)


CA_USAGE = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
SIGNING_USAGE = x509.KeyUsage(True, True, False, False, False, False, False, False, False)
ENCIPHER_USAGE = x509.KeyUsage(False, False, True, False, False, False, False, False, False)


def make_cert(
    subject: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: CaKey | rsa.RSAPrivateKey,
    *,
    ca: bool | None,
    usage: x509.KeyUsage | None,
    start: dt.datetime | None = None,
    days: int = 365,
) -> x509.Certificate:
    start = start or now() - dt.timedelta(days=10)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    if ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if usage is not None:
        b = b.add_extension(usage, critical=True)
    return b.sign(issuer_key, hashes.SHA256())


class Pki:
    """A root, an issuing CA under it, and leaves for signing messages."""

    def __init__(
        self, label: str = "Test", *, inter_start: dt.datetime | None = None, inter_days: int = 3650
    ) -> None:
        self.root_key, self.inter_key = ca_key(), ca_key()
        self.root_name, self.inter_name = (
            subject_name(f"{label} Root CA"),
            subject_name(f"{label} Issuing CA"),
        )
        self.root = make_cert(self.root_name, self.root_key.public_key(), self.root_name, self.root_key,
                              ca=True, usage=CA_USAGE, start=now() - dt.timedelta(days=1000), days=7300)  # fmt: skip
        self.inter = make_cert(self.inter_name, self.inter_key.public_key(), self.root_name, self.root_key,
                               ca=True, usage=CA_USAGE, start=inter_start, days=inter_days)  # fmt: skip

    def leaf(
        self,
        org: str | None = ORG,
        *,
        org_as: str = "serial",
        usage: x509.KeyUsage | None = SIGNING_USAGE,
        ca: bool | None = False,
        start: dt.datetime | None = None,
        days: int = 365,
    ) -> x509.Certificate:
        return make_cert(subject_name("Helse Vestfjord HF signering", org, org_as), leaf_key().public_key(),
                         self.inter_name, self.inter_key, ca=ca, usage=usage, start=start, days=days)  # fmt: skip

    def anchors(self, directory: Path) -> Path:
        path = directory / "anchors.pem"
        path.write_bytes(self.root.public_bytes(serialization.Encoding.PEM))
        return path

    def crl(
        self,
        revoked: list[x509.Certificate] = (),  # type: ignore[assignment]
        *,
        by_root: bool = False,
        next_update: dt.datetime | None = None,
        signer: CaKey | None = None,
        last_update: dt.datetime | None = None,
    ) -> bytes:
        issuer, key = (self.root_name, self.root_key) if by_root else (self.inter_name, self.inter_key)
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer)
            .last_update(last_update or now() - dt.timedelta(hours=1))
            .next_update(next_update or now() + dt.timedelta(days=7))
        )
        for cert in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(now() - dt.timedelta(minutes=30))
                .build()
            )
        return b.sign(signer or key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def crl_dir(self, directory: Path, revoked: list[x509.Certificate] = ()) -> Path:  # type: ignore[assignment]
        """CRLs from both CAs, as operations would keep them."""
        d = directory / "crl"
        d.mkdir(exist_ok=True)
        (d / "issuing.crl").write_bytes(self.crl(revoked))
        (d / "root.crl").write_bytes(self.crl(revoked, by_root=True))
        return d


def signing_key(cert: x509.Certificate, *chain: x509.Certificate) -> SigningKey:
    """Leaf key and certificate, with intermediates for KeyInfo."""
    return SigningKey(
        leaf_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, *chain)),
    )


def message(gen_date: dt.datetime | None = None, enh: str | None = ORG) -> etree._Element:
    """A marked Dialogmelding with GenDate now (or as given) and the sender's ENH id."""
    root = etree.fromstring((SAMPLES / "dlg11-marked-tema.xml").read_bytes())
    gen = root.find(f"{MH}MsgInfo/{MH}GenDate")
    assert gen is not None
    gen.text = (gen_date or now() - dt.timedelta(minutes=5)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if enh is not None:
        org = root.find(f"{MH}MsgInfo/{MH}Sender/{MH}Organisation")
        assert org is not None
        ident = etree.fromstring(
            f'<Ident xmlns="{MH[1:-1]}"><Id>{enh}</Id>'
            '<TypeId V="ENH" DN="Organisasjonsnummeret i Enhetsregisteret" S="2.16.578.1.12.4.1.1.9051"/></Ident>'
        )
        org.insert(list(org).index(org.find(f"{MH}Ident")) + 1, ident)  # type: ignore[arg-type]
    return root


def signed(cert: x509.Certificate, *chain: x509.Certificate, root: etree._Element | None = None) -> bytes:
    return etree.tostring(sign(root if root is not None else message(), signing_key(cert, *chain)))


# -- unit tests ---------------------------------------------------------------------------------


def test_absent_when_unsigned() -> None:
    assert verify(message()).status == "absent"


def test_sign_then_verify_and_tamper() -> None:
    pki = Pki()
    data = signed(pki.leaf(), pki.inter)
    root = etree.fromstring(data)
    assert etree.QName(root[-1]).localname == "Signature"
    assert len(root[-1].findall(".//{*}X509Certificate")) == 2, "the intermediate travels in KeyInfo"
    result = verify(root)
    assert result.status == "valid" and result.reason and "issuer was not checked" in result.reason
    assert result.organisation_number == ORG and not result.anchored
    bad = verify(etree.fromstring(data.replace(b"Tildelingskontoret", b"Tildelingskontor X")))
    assert bad.status == "invalid" and bad.apprec_code == "S01"


def test_chain_to_anchor_through_carried_intermediate(tmp_path: Path) -> None:
    pki = Pki()
    result = verify(etree.fromstring(signed(pki.leaf(), pki.inter)), pki.anchors(tmp_path))
    assert result.status == "valid" and result.anchored and result.reason is None


def test_expired_certificate_is_s02() -> None:
    pki = Pki()
    old = pki.leaf(start=now() - dt.timedelta(days=400), days=365)
    result = verify(etree.fromstring(signed(old, pki.inter)))
    assert result.status == "invalid" and result.apprec_code == "S02"


def test_validity_is_judged_at_gendate_never_later_than_now(tmp_path: Path) -> None:
    """A message made while the certificate was valid, days ago, still verifies after it
    expired; a GenDate in the future does not move the check past the certificate's end."""
    pki = Pki(inter_start=now() - dt.timedelta(days=800))
    ended = pki.leaf(start=now() - dt.timedelta(days=370), days=365)
    then = now() - dt.timedelta(days=10)
    made_then = etree.fromstring(signed(ended, pki.inter, root=message(gen_date=then)))
    assert verify(made_then, pki.anchors(tmp_path), message_time=then).status == "valid"
    assert verify(made_then, pki.anchors(tmp_path)).apprec_code == "S02", "judged today, it has expired"
    future = pki.leaf(start=now() + dt.timedelta(days=10))
    claimed = now() + dt.timedelta(days=20)
    data = signed(future, pki.inter, root=message(gen_date=claimed))
    early = verify(etree.fromstring(data), pki.anchors(tmp_path), message_time=claimed)
    assert early.status == "invalid" and early.apprec_code == "S02"


def test_signature_without_certificate_is_invalid() -> None:
    root = message()
    sig = etree.SubElement(root, "{http://www.w3.org/2000/09/xmldsig#}Signature")
    info = etree.SubElement(sig, "{http://www.w3.org/2000/09/xmldsig#}SignedInfo")
    etree.SubElement(info, "{http://www.w3.org/2000/09/xmldsig#}Reference", URI="")
    assert verify(root).status == "invalid"


def test_organisation_number_from_serial_or_organization_identifier() -> None:
    pki = Pki()
    assert certpath.organisation_number(pki.leaf("123456789")) == "123456789"
    assert certpath.organisation_number(pki.leaf("123456789", org_as="identifier")) == "123456789"
    assert certpath.organisation_number(pki.leaf(None)) is None
    personal = make_cert(subject_name("Kari Lege", "9578-4050-127091783"), leaf_key().public_key(),
                         pki.inter_name, pki.inter_key, ca=False, usage=SIGNING_USAGE)  # fmt: skip
    assert certpath.organisation_number(personal) is None, "a personal certificate's PID is no org number"


def test_crl_warnings_name_stale_and_unreadable_files(tmp_path: Path) -> None:
    pki = Pki()
    d = tmp_path / "crl"
    d.mkdir()
    assert crl.crl_warnings(None, now()) == []
    assert "holds no CRL" in crl.crl_warnings(d, now())[0]
    stale = pki.crl(last_update=now() - dt.timedelta(days=8), next_update=now() - dt.timedelta(hours=2))
    (d / "issuing.crl").write_bytes(stale)
    (d / "root.pem").write_bytes(b"-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
    warnings = crl.crl_warnings(d, now())
    assert len(warnings) == 2
    assert any("issuing.crl is past its nextUpdate" in w for w in warnings)
    assert any("root.pem cannot be read" in w for w in warnings)
    (d / "root.pem").unlink()
    (d / "issuing-new.crl").write_bytes(pki.crl(last_update=now()))
    assert crl.crl_warnings(d, now()) == [], "a stale CRL beside a fresher one from the same CA is fine"


def test_gp_copy_is_signed_with_the_configured_key(official_schemas: SchemaSet) -> None:
    """What the product sends carries a signature that verifies, and stays schema-valid."""
    pki = Pki()
    original = examine((SAMPLES / "dlg11-marked-attachment.xml").read_bytes())
    assert original.message is not None
    sender = gpcopy.Party("Fjordvik kommune", "8300001", "Tildelingskontoret", "8300010")
    gp = gpcopy.GPAddress("Fjordvik legesenter", "8200001", "Kari Lege", "9000001")
    _, xml = gpcopy.build(
        original.message, sender, gp, now(), original.root, signing_key(pki.leaf(), pki.inter)
    )
    root = etree.fromstring(xml)
    assert verify(root).status == "valid"
    assert official_schemas.validate(root) == []
    tampered = etree.fromstring(xml.replace(b"Fjordvik legesenter", b"Fjordvik legesentre"))
    assert verify(tampered).status == "invalid"


def test_older_kith_form_inclusive_c14n_and_sha1_verifies_with_a_warning(tmp_path: Path) -> None:
    """The older signed KITH messages: inclusive c14n 1.0, RSA-SHA1, SHA-1 digests."""
    from signxml import XMLSigner
    from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod

    class OldSigner(XMLSigner):
        def check_deprecated_methods(self) -> None:
            """signxml refuses to make SHA-1 signatures; old senders made them."""

    pki = Pki()
    signer = OldSigner(
        signature_algorithm=SignatureMethod.RSA_SHA1,
        digest_algorithm=DigestAlgorithm.SHA1,
        c14n_algorithm=CanonicalizationMethod.CANONICAL_XML_1_0,
    )
    key = signing_key(pki.leaf(), pki.inter)
    data = etree.tostring(signer.sign(message(), key=key.key_pem, cert=key.cert_pem.decode()))
    result = verify(etree.fromstring(data), pki.anchors(tmp_path))
    assert result.status == "valid" and result.weak_algorithm
    changed = verify(etree.fromstring(data.replace(b"Tildelingskontoret", b"Tildelingskontor X")))
    assert changed.status == "invalid" and changed.apprec_code == "S01"
