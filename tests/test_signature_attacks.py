"""Signatures must mean what they say: each attack on a signed message, through the daemon's
own decision path (settings file → Drafter → verdict → AppRec). Every refused case must come
out as a negative AppRec (status 2) with the 8221 code for it, and the honest message beside
it must still be accepted, so a product that refused everything would fail too."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from signxml import XMLSigner, XMLVerifier
from signxml.algorithms import DigestAlgorithm, SignatureMethod

from pfhjem_msg import ops
from pfhjem_msg.config import load
from pfhjem_msg.drafting import Draft, Drafter
from pfhjem_msg.kith.apprec import apprec_status
from pfhjem_msg.kith.verdict import examine
from pfhjem_msg.store import open_store
from tests.conftest import write_config
from tests.test_signature import (
    ENCIPHER_USAGE,
    MH,
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

DS = "{http://www.w3.org/2000/09/xmldsig#}"
PATIENT_ID = b"14835841481"


def drafter(
    tmp_path: Path,
    pki: Pki | None = None,
    *,
    crl: Path | None = None,
    require: bool | None = None,
    senders: str = "",
) -> Drafter:
    """The daemon's drafter from a configuration file, as ``run`` builds it."""
    lines = ["[kith]"]
    if pki is not None:
        lines.append(f'trust_anchors = "{pki.anchors(tmp_path)}"')
    if crl is not None:
        lines.append(f'crl_dir = "{crl}"')
    if require is not None:
        lines.append(f"require_signature = {str(require).lower()}")
    return Drafter(load(write_config(tmp_path, extra="\n".join(lines) + "\n" + senders)))


def sub(tmp_path: Path, name: str) -> Path:
    """A second configuration in the same test gets its own directory."""
    path = tmp_path / name
    path.mkdir()
    return path


def outcome(d: Drafter, raw: bytes) -> str:
    """The AppRec the daemon would send: «1», or «2 S01» and the like."""
    draft = d.draft(raw, 1, now())
    assert isinstance(draft, Draft)
    apprecs = [x for x in draft.change.deliveries if x.kind == "apprec"]
    assert len(apprecs) == 1
    status = apprec_status(apprecs[0].payload)
    assert (draft.change.on_delivered == "rejected") == status.startswith("2"), "a negative AppRec rejects"
    if status.startswith("2"):
        assert not [x for x in draft.change.deliveries if x.kind != "apprec"], "nothing is delivered"
    return status


def _sign_element_by_id(root: etree._Element, pki: Pki) -> bytes:
    """A signature whose Reference points at one small element (``URI="#..."``)."""
    msg_type = root.find(f"{MH}MsgInfo/{MH}Type")
    assert msg_type is not None
    msg_type.set("Id", "signed-part")
    cert = pki.leaf()
    signer = XMLSigner(
        signature_algorithm=SignatureMethod.RSA_SHA256, digest_algorithm=DigestAlgorithm.SHA256
    )
    key = leaf_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    out = signer.sign(root, key=key, cert=cert.public_bytes(serialization.Encoding.PEM).decode(),
                      reference_uri="#signed-part")  # fmt: skip
    return etree.tostring(out)


def _tamper_identity(data: bytes) -> bytes:
    """Change the sender HER-id, the patient's national id and name after signing."""
    return (
        data.replace(b"<Id>8100020</Id>", b"<Id>8100099</Id>")
        .replace(PATIENT_ID, b"01017012345")
        .replace("Prøvestad".encode(), b"Annenstad")
    )


# -- the honest message -------------------------------------------------------------------------


def test_honest_signed_message_through_a_real_chain_is_accepted(tmp_path: Path) -> None:
    pki = Pki()
    d = drafter(tmp_path, pki, crl=pki.crl_dir(tmp_path), require=True)
    data = signed(pki.leaf(), pki.inter)
    assert outcome(d, data) == "1"
    verdict = examine(data, "m", d.options)
    assert verdict.signature.status == "valid" and verdict.signature.anchored
    assert not [i for i in verdict.issues if i.code.startswith(("SIGNATURE", "CRL"))]


# -- signature wrapping -------------------------------------------------------------------------


def test_signature_wrapping_reference_to_a_small_element(tmp_path: Path) -> None:
    """Only MsgInfo/Type is signed; sender, patient id and name are changed afterwards. A
    verifier that trusts any valid reference accepts it, as signxml alone does."""
    pki = Pki()
    attacked = _tamper_identity(_sign_element_by_id(message(), pki))
    cert = etree.fromstring(attacked).find(f".//{DS}X509Certificate")
    assert cert is not None and cert.text
    leaf = x509.load_der_x509_certificate(base64.b64decode(cert.text))
    assert XMLVerifier().verify(attacked, x509_cert=leaf).signed_xml is not None, "signxml alone accepts it"
    assert outcome(drafter(tmp_path), attacked) == "2 S01"
    assert outcome(drafter(sub(tmp_path, "anchored"), pki), attacked) == "2 S01", (
        "a trusted signer changes nothing"
    )


def test_signature_wrapping_signature_moved_onto_another_message(tmp_path: Path) -> None:
    pki = Pki()
    original = etree.fromstring(signed(pki.leaf(), pki.inter))
    forged = etree.fromstring(_tamper_identity(etree.tostring(message())))
    forged.append(original[-1])
    assert outcome(drafter(tmp_path, pki), etree.tostring(forged)) == "2 S01"


def test_signature_wrapping_signed_original_beside_a_forged_message(tmp_path: Path) -> None:
    """The forged MsgHead comes first in a wrapper and is what would be read; the signed
    original rides along. The signature of another element is no signature of this one."""
    pki = Pki()
    original = signed(pki.leaf(), pki.inter)
    forged = _tamper_identity(etree.tostring(message()))
    wrapper = b"<Envelope>" + forged + original + b"</Envelope>"
    assert outcome(drafter(tmp_path, pki, require=True), wrapper) == "2 S01"


def test_comment_inserted_after_signing_truncates_the_patient_id(tmp_path: Path) -> None:
    """c14n drops comments, so the signature still verifies; but the reader would see only
    the text before the comment."""
    pki = Pki()
    leaf = pki.leaf()
    attacked = signed(leaf, pki.inter).replace(PATIENT_ID, PATIENT_ID[:6] + b"<!---->" + PATIENT_ID[6:])
    assert XMLVerifier().verify(attacked, x509_cert=leaf).signed_xml is not None, "signxml alone accepts it"
    assert outcome(drafter(tmp_path, pki), attacked) == "2 S01"


def test_content_changed_after_signing(tmp_path: Path) -> None:
    pki = Pki()
    assert outcome(drafter(tmp_path, pki), _tamper_identity(signed(pki.leaf(), pki.inter))) == "2 S01"


# -- certificate paths --------------------------------------------------------------------------


def test_certificate_issued_by_a_non_ca(tmp_path: Path) -> None:
    """A holder of an ordinary signing certificate issues one for another organisation."""
    pki = Pki()
    own = pki.leaf("911111111")
    forged = make_cert(subject_name("Helse Vestfjord HF signering", ORG), leaf_key().public_key(), own.subject, leaf_key(),
                       ca=False, usage=SIGNING_USAGE)  # fmt: skip
    assert outcome(drafter(tmp_path, pki), signed(forged, own, pki.inter)) == "2 S02"


def test_certificate_from_a_look_alike_ca_with_the_same_names(tmp_path: Path) -> None:
    real, fake = Pki(), Pki()
    assert outcome(drafter(tmp_path, real), signed(fake.leaf(), fake.inter)) == "2 S02"


def test_expired_signing_certificate(tmp_path: Path) -> None:
    pki = Pki()
    old = pki.leaf(start=now() - dt.timedelta(days=400), days=365)
    assert outcome(drafter(tmp_path, pki), signed(old, pki.inter)) == "2 S02"


def test_expired_issuing_ca(tmp_path: Path) -> None:
    pki = Pki(inter_start=now() - dt.timedelta(days=400), inter_days=390)
    leaf = pki.leaf(start=now() - dt.timedelta(days=20), days=365)
    assert outcome(drafter(tmp_path, pki), signed(leaf, pki.inter)) == "2 S02"


def test_backdated_gendate_does_not_revive_an_expired_certificate_from_the_future(tmp_path: Path) -> None:
    """GenDate is bounded by now: a message claiming to be from next month is judged today."""
    pki = Pki()
    later = pki.leaf(start=now() + dt.timedelta(days=30))
    root = message(gen_date=now() + dt.timedelta(days=40))
    assert outcome(drafter(tmp_path, pki), signed(later, pki.inter, root=root)) == "2 S02"


def test_leaf_for_key_encipherment_only(tmp_path: Path) -> None:
    pki = Pki()
    assert outcome(drafter(tmp_path, pki), signed(pki.leaf(usage=ENCIPHER_USAGE), pki.inter)) == "2 S02"


def test_leaf_without_key_usage(tmp_path: Path) -> None:
    pki = Pki()
    assert outcome(drafter(tmp_path, pki), signed(pki.leaf(usage=None), pki.inter)) == "2 S02"


def test_ca_certificate_used_as_signing_certificate(tmp_path: Path) -> None:
    pki = Pki()
    assert outcome(drafter(tmp_path, pki), signed(pki.leaf(ca=True), pki.inter)) == "2 S02"


# -- revocation ---------------------------------------------------------------------------------


def test_revoked_signing_certificate(tmp_path: Path) -> None:
    pki = Pki()
    leaf = pki.leaf()
    d = drafter(tmp_path, pki, crl=pki.crl_dir(tmp_path, revoked=[leaf]))
    assert outcome(d, signed(leaf, pki.inter)) == "2 S03"
    assert outcome(d, signed(pki.leaf(), pki.inter)) == "1", "another certificate of the CA is fine"


def test_revoked_issuing_ca(tmp_path: Path) -> None:
    pki = Pki()
    d = drafter(tmp_path, pki, crl=pki.crl_dir(tmp_path, revoked=[pki.inter]))
    assert outcome(d, signed(pki.leaf(), pki.inter)) == "2 S03"


def test_no_crl_from_the_issuer_means_revocation_unknown(tmp_path: Path) -> None:
    pki = Pki()
    empty = tmp_path / "crl"
    empty.mkdir()
    assert outcome(drafter(tmp_path, pki, crl=empty), signed(pki.leaf(), pki.inter)) == "2 S99"


def test_forged_crl_without_the_revocation_is_not_believed(tmp_path: Path) -> None:
    """A CRL file with the CA's name but another key's signature does not clear a revoked
    certificate (it is ignored, so revocation stays unknown)."""
    pki = Pki()
    leaf = pki.leaf()
    d = pki.crl_dir(tmp_path, revoked=[leaf])
    (d / "issuing.crl").write_bytes(pki.crl([], signer=ca_key()))
    assert outcome(drafter(tmp_path, pki, crl=d), signed(leaf, pki.inter)) == "2 S99"


def test_stale_crl_is_used_and_status_warns(tmp_path: Path) -> None:
    pki = Pki()
    leaf = pki.leaf()
    d = pki.crl_dir(tmp_path, revoked=[leaf])
    stale = pki.crl(
        [leaf], last_update=now() - dt.timedelta(days=9), next_update=now() - dt.timedelta(days=2)
    )
    (d / "issuing.crl").write_bytes(stale)
    drafts = drafter(tmp_path, pki, crl=d)
    assert outcome(drafts, signed(leaf, pki.inter)) == "2 S03", "a stale CRL still revokes"
    honest = signed(pki.leaf(), pki.inter)
    assert outcome(drafts, honest) == "1"
    assert "CRL_STALE" in {i.code for i in examine(honest, "m", drafts.options).issues}
    store = open_store(tmp_path / "state")
    try:
        problems = ops.status(store, now(), d).problems
    finally:
        store.close()
    assert any("issuing.crl is past its nextUpdate" in p for p in problems)


# -- who signed ---------------------------------------------------------------------------------


def test_signed_by_another_organisation_than_the_msghead_sender(tmp_path: Path) -> None:
    pki = Pki()
    assert outcome(drafter(tmp_path, pki), signed(pki.leaf("999999999"), pki.inter)) == "2 S02"


def test_signed_by_another_organisation_than_configured_for_the_sender(tmp_path: Path) -> None:
    pki = Pki()
    senders = '[[kith.sender]]\nher_id = "8100020"\norganisation_number = "888888888"\n'
    root = message(enh=None)
    assert (
        outcome(drafter(tmp_path, pki, senders=senders), signed(pki.leaf(), pki.inter, root=root)) == "2 S02"
    )
    ok = pki.leaf("888888888", org_as="identifier")
    assert outcome(drafter(sub(tmp_path, "x"), pki, senders=senders), signed(ok, pki.inter, root=root)) == "1"


def test_certificate_without_organisation_number_when_one_is_expected(tmp_path: Path) -> None:
    pki = Pki()
    assert outcome(drafter(tmp_path, pki), signed(pki.leaf(None), pki.inter)) == "2 S02"


# -- required signatures ------------------------------------------------------------------------


def test_unsigned_message_when_signatures_are_required(tmp_path: Path) -> None:
    pki = Pki()
    unsigned = etree.tostring(message())
    assert outcome(drafter(tmp_path, pki, require=True), unsigned) == "2 S01"
    assert outcome(drafter(sub(tmp_path, "off"), pki, require=False), unsigned) == "1"


def test_required_per_sender(tmp_path: Path) -> None:
    """A sender's own setting wins over the global one, both ways."""
    pki = Pki()
    unsigned = etree.tostring(message())
    must = '[[kith.sender]]\nher_id = "8100020"\nrequire_signature = true\n'
    assert outcome(drafter(sub(tmp_path, "a"), pki, require=False, senders=must), unsigned) == "2 S01"
    other = '[[kith.sender]]\nher_id = "8199999"\nrequire_signature = true\n'
    assert outcome(drafter(sub(tmp_path, "b"), pki, require=False, senders=other), unsigned) == "1"
    exempt = '[[kith.sender]]\nher_id = "8100020"\nrequire_signature = false\n'
    assert outcome(drafter(sub(tmp_path, "c"), pki, require=True, senders=exempt), unsigned) == "1"


def test_required_signature_without_trust_anchors_is_not_satisfied_by_any_certificate(tmp_path: Path) -> None:
    """Without anchors anyone can make a certificate; a requirement that it could satisfy
    would be no requirement."""
    pki = Pki()
    assert outcome(drafter(tmp_path, None, require=True), signed(pki.leaf(), pki.inter)) == "2 S02"


def test_certificate_with_an_impossible_version_is_unreadable_not_a_crash(tmp_path: Path) -> None:
    """A certificate whose version field says v6: the parser raises its own error (not a
    ``ValueError``); the message must get S02 like any unreadable certificate."""
    pki = Pki()
    root = etree.fromstring(signed(pki.leaf(), pki.inter))
    el = root.find(f".//{DS}X509Certificate")
    assert el is not None and el.text
    der = base64.b64decode(el.text)
    version = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2 (v3)
    assert version in der
    el.text = base64.b64encode(der.replace(version, bytes.fromhex("a003020105"), 1)).decode()
    assert outcome(drafter(tmp_path, pki), etree.tostring(root)) == "2 S02"


def test_certificate_with_a_key_of_an_unknown_kind_is_unusable_not_a_crash(tmp_path: Path) -> None:
    """The key's algorithm says something no library knows: reading the key raises
    ``UnsupportedAlgorithm``; the message gets S02."""
    pki = Pki()
    root = etree.fromstring(signed(pki.leaf(), pki.inter))
    el = root.find(f".//{DS}X509Certificate")
    assert el is not None and el.text
    der = base64.b64decode(el.text)
    rsa = bytes.fromhex("06092a864886f70d010101")  # OID rsaEncryption in the key info
    assert der.count(rsa) == 1
    el.text = base64.b64encode(der.replace(rsa, bytes.fromhex("06092a864886f70d010163"))).decode()
    assert outcome(drafter(tmp_path, pki), etree.tostring(root)) == "2 S02"
