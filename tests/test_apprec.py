"""The AppRec rules: mirrored addressing, roles, version, status and codes, and when none is due."""

from __future__ import annotations

from lxml import etree

from pfhjem_msg.kith import apprec
from pfhjem_msg.kith.batch import examine_file
from pfhjem_msg.kith.verdict import Options
from tests.conftest import SAMPLES

AR = "{http://www.kith.no/xmlstds/apprec/2012-02-15}"


def _decide(name: str, options: Options, **policy) -> apprec.AppRecDecision:  # type: ignore[no-untyped-def]
    return apprec.decide(examine_file(SAMPLES / name, options), apprec.AppRecPolicy(**policy))


def test_addressing_is_mirrored(options: Options) -> None:
    d = _decide("dlg11-marked-tema.xml", options)
    root = etree.fromstring(d.xml)
    sender = root.find(f"{AR}Sender")
    receiver = root.find(f"{AR}Receiver")
    assert sender.find(f"{AR}Role").get("V") == "PRIM"
    assert sender.findtext(f"{AR}HCP/{AR}Inst/{AR}Id") == "8300001"
    assert sender.findtext(f"{AR}HCP/{AR}Inst/{AR}Dept/{AR}Id") == "8300010"
    assert receiver.find(f"{AR}Role").get("V") == "AVS"
    assert receiver.findtext(f"{AR}HCP/{AR}Inst/{AR}Name") == "Helse Vestfjord HF"
    assert receiver.findtext(f"{AR}HCP/{AR}Inst/{AR}Dept/{AR}Id") == "8100020"
    original = root.find(f"{AR}OriginalMsgId")
    assert original.find(f"{AR}MsgType").get("V") == "DIALOG_HELSEFAGLIG"
    assert original.findtext(f"{AR}Id") == "5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0001"
    assert original.findtext(f"{AR}IssueDate") == "2026-10-05T09:14:22"
    assert root.find(f"{AR}Status").get("V") == "1"
    assert root.find(f"{AR}Error") is None


def test_healthcare_professional_becomes_hcperson(options: Options) -> None:
    # As a copy receiver we answer as the GP office with the GP as HCPerson, role COP.
    d = _decide("dlg11-marked-gp-copy.xml", options, known_her_ids=frozenset({"8500011"}))
    root = etree.fromstring(d.xml)
    sender = root.find(f"{AR}Sender")
    assert sender.find(f"{AR}Role").get("V") == "COP"
    person = sender.find(f"{AR}HCP/{AR}Inst/{AR}HCPerson")
    assert person.findtext(f"{AR}Name") == "Anne Allmennsen"
    assert person.findtext(f"{AR}Id") == "8500011"
    assert person.findtext(f"{AR}AdditionalId/{AR}Id") == "9912345"


def test_unknown_receiver_gives_e21_or_hold(options: Options) -> None:
    d = _decide("dlg11-marked-tema.xml", options, known_her_ids=frozenset({"9999999"}))
    assert d.status == "2" and [c for c, _ in d.errors] == ["E21"]
    held = _decide(
        "dlg11-marked-tema.xml", options, known_her_ids=frozenset({"9999999"}), unknown_receiver="hold"
    )
    assert not held.due and "hold" in held.reason


def test_schema_errors_reject_only_when_configured(options: Options) -> None:
    assert _decide("broken-schema-order.xml", options).status == "1"
    strict = _decide("broken-schema-order.xml", options, reject_schema_errors=True)
    assert strict.status == "2" and [c for c, _ in strict.errors] == ["T02"]
    assert strict.errors[0][1] and "Receiver" in strict.errors[0][1]


def test_epikrise_addressing_leaves_out_the_senders_person(options: Options) -> None:
    d = _decide("epi12-marked-msgdescr.xml", options)
    root = etree.fromstring(d.xml)
    assert root.find(f"{AR}Receiver/{AR}HCP/{AR}Inst/{AR}HCPerson") is None
    assert root.findtext(f"{AR}Receiver/{AR}HCP/{AR}Inst/{AR}Id") == "8200001"
    assert root.find(f"{AR}OriginalMsgId/{AR}MsgType").get("V") == "EPIKRISE"


def test_no_apprec_for_an_apprec_or_an_unreadable_sender(options: Options) -> None:
    assert not _decide("apprec11-ok.xml", options).due
    assert not _decide("broken-dtd.xml", options).due
    assert "sender" in _decide("broken-empty.xml", options).reason


def test_not_well_formed_with_readable_sender_gets_t01(options: Options) -> None:
    d = _decide("broken-not-well-formed.xml", options)
    assert d.due and d.status == "2" and [c for c, _ in d.errors] == ["T01"]
