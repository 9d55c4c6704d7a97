"""The application receipt (AppRec): reading the ones we receive, deciding and building the
one we owe for each message we receive.

Rules (HIS 80415, HITS 1168): exactly one AppRec per received message, never for an AppRec;
version by payload (Dialogmelding 1.0 and Epikrise 1.1 → 1.0, otherwise 1.1); addressing is
the original mirrored (our receiving party → Sender with role PRIM or COP, the original
sender → Receiver with role AVS); status 1 with no Error, or 2 with 8221 codes. No AppRec
when the sender cannot be determined: there is no one to send it to.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from lxml import etree

from pfhjem_msg import __version__
from pfhjem_msg.kith import codes
from pfhjem_msg.kith.epikrise import read_hcp
from pfhjem_msg.kith.model import AppRecPayload, Code, Ident, Message, Party, parse_kith_datetime
from pfhjem_msg.kith.walk import Reader, attr, child, children, text

if TYPE_CHECKING:
    from pfhjem_msg.kith.verdict import Verdict

NS = {
    "1.0": "http://www.kith.no/xmlstds/apprec/2004-11-21",
    "1.1": "http://www.kith.no/xmlstds/apprec/2012-02-15",
}
MIG = {"1.0": "1.0 2004-11-21", "1.1": "v1.1 2012-02-15"}
ID_TYPE_TEXT = {
    "HER": "HER-id",
    "ENH": "Organisasjonsnummeret i Enhetsregisteret",
    "HPR": "HPR-nummer",
    "RSH": "RESH-id",
    "FNR": "Fødselsnummer",
    "DNR": "D-nummer",
}
PRIVATE_ID_TYPES = frozenset({"FNR", "DNR", "HNR", "FHN", "DUF", "PNR", "SSN"})
AppRecVersion = Literal["1.0", "1.1"]
UnknownReceiverPolicy = Literal["apprec_e21", "hold"]


def read_apprec(r: Reader, root: etree._Element, version: str) -> Message:
    msg = Message(standard="apprec-1.0" if version == "1.0" else "apprec-1.1", root="AppRec")
    msg.msg_type = r.code(root, "MsgType")
    msg.msg_id = text(root, "Id")
    msg.gen_date = text(root, "GenDate")
    msg.sender = read_hcp(r, child(root, "Sender"), r.code(child(root, "Sender"), "Role"))
    msg.receiver = read_hcp(r, child(root, "Receiver"), r.code(child(root, "Receiver"), "Role"))
    original = child(root, "OriginalMsgId")
    payload = AppRecPayload(
        version=version,
        status=r.code(root, "Status"),
        original_msg_type=attr(original, "MsgType"),
        original_msg_id=text(original, "Id"),
        original_issue_date=text(original, "IssueDate"),
    )
    for el in children(root, "Error"):
        code = r.code(el)
        if code is not None:
            payload.errors.append(Code(code.value, code.system, el.get("OT") or code.text))
    msg.payload = payload
    return msg


@dataclass(frozen=True)
class AppRecPolicy:
    """What the operator decides about receipts (``[apprec]`` in the configuration)."""

    reject_schema_errors: bool = False
    """Schema errors make a negative AppRec optional (T02); by default a message whose
    essentials could be read is accepted and the errors are recorded."""
    known_her_ids: frozenset[str] | None = None
    """The HER-ids we receive on; None when not configured (no E21 check)."""
    unknown_receiver: UnknownReceiverPolicy = "apprec_e21"


@dataclass
class AppRecDecision:
    due: bool
    reason: str
    version: AppRecVersion | None = None
    status: str | None = None
    errors: list[tuple[str, str | None]] = field(default_factory=list)
    """(8221 code, extra text for OT) in the order found."""
    role: tuple[str, str] | None = None
    our_party: Party | None = None
    xml: bytes | None = None
    apprec_id: str | None = None


def apprec_version(msg: Message) -> AppRecVersion:
    return "1.0" if msg.standard in ("dialogmelding-1.0", "epikrise-1.1") else "1.1"


def _our_party(msg: Message, policy: AppRecPolicy) -> tuple[Party | None, tuple[str, str], bool]:
    """(the party we received as, PRIM or COP, whether it is one of ours)."""
    receiver = msg.receiver or Party()
    if policy.known_her_ids is None:
        return receiver, codes.ROLE_PRIMARY, True
    if set(receiver.her_ids) & policy.known_her_ids:
        return receiver, codes.ROLE_PRIMARY, True
    for other in msg.other_receivers:
        if set(other.her_ids) & policy.known_her_ids:
            return other, codes.ROLE_COPY, True
    return receiver, codes.ROLE_PRIMARY, False


def decide(
    verdict: Verdict,
    policy: AppRecPolicy | None = None,
    now: datetime | None = None,
    apprec_id: str | None = None,
) -> AppRecDecision:
    """The AppRec owed for one received message (with its XML), or why none is."""
    policy = policy or AppRecPolicy()
    msg = verdict.message
    if msg is None:
        return AppRecDecision(
            False,
            "no AppRec: the sender cannot be read from the message, so there is "
            "no one to address it to; an operator must contact the sender",
        )
    if msg.is_apprec:
        return AppRecDecision(False, "no AppRec is sent for an AppRec")
    if msg.sender is None or not msg.sender.her_ids:
        return AppRecDecision(
            False, "no AppRec: the sender has no HER-id to address it to; an operator must contact the sender"
        )
    ours, role, known = _our_party(msg, policy)
    errors: list[tuple[str, str | None]] = []
    if not known:
        if policy.unknown_receiver == "hold":
            return AppRecDecision(
                False,
                "no AppRec yet: the receiver is not one of ours and the policy is "
                "to hold such messages for an operator",
            )
        errors.append(("E21", "receiver HER-id is not served here"))
    schema_text: str | None = None
    for issue in verdict.issues:
        code = issue.apprec_code
        if issue.severity != "error" or code is None:
            continue
        if code == "T02":
            if schema_text is None:
                schema_text = issue.message
            if not policy.reject_schema_errors:
                continue
        if code not in (c for c, _ in errors):
            errors.append((code, schema_text if code == "T02" else issue.message))
    decision = AppRecDecision(
        True,
        "positive AppRec: received and readable"
        if not errors
        else "negative AppRec: " + ", ".join(c for c, _ in errors),
        version=apprec_version(msg),
        status="2" if errors else "1",
        errors=errors,
        role=role,
        our_party=ours,
        apprec_id=apprec_id or str(uuid.uuid4()),
    )
    decision.xml = build_xml(msg, decision, now or datetime.now().astimezone())
    return decision


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _hcp(parent: etree._Element, ns: str, party: Party, drop_persons: bool) -> None:
    def q(name: str) -> str:
        return _q(ns, name)

    hcp = etree.SubElement(parent, q("HCP"))
    levels = list(party.levels)
    if not levels:
        inst = etree.SubElement(hcp, q("Inst"))
        etree.SubElement(inst, q("Name")).text = "Ukjent"
        return
    orgs = [lvl for lvl in levels if lvl.kind in ("organisation", "department")]
    persons = [lvl for lvl in levels if lvl.kind not in ("organisation", "department")]
    if not orgs:
        prof = etree.SubElement(hcp, q("HCProf"))
        _named_ids(prof, ns, persons[0].name, persons[0].idents)
        return
    inst = etree.SubElement(hcp, q("Inst"))
    top = orgs[0]
    if top.name:
        etree.SubElement(inst, q("Name")).text = top.name
    first, rest = _split_ids(top.idents)
    if first:
        etree.SubElement(inst, q("Id")).text = first.id
        _type_id(inst, ns, first.type)
    for dept in orgs[1:]:
        if dept.name or dept.idents:
            _named_ids(etree.SubElement(inst, q("Dept")), ns, dept.name, dept.idents)
    for extra in rest:
        _additional(inst, ns, extra)
    if not drop_persons:
        for person in persons:
            p = etree.SubElement(inst, q("HCPerson"))
            _named_ids(p, ns, person.name, person.idents)


def _split_ids(idents: list[Ident]) -> tuple[Ident | None, list[Ident]]:
    """HER-id first (it is what the AppRec is routed on); the others become AdditionalId.
    A health worker's own national id is left out: routing never needs it."""
    ordered = sorted((i for i in idents if i.type not in PRIVATE_ID_TYPES), key=lambda i: i.type != "HER")
    return (ordered[0], ordered[1:]) if ordered else (None, [])


def _named_ids(el: etree._Element, ns: str, name: str | None, idents: list[Ident]) -> None:
    if name:
        etree.SubElement(el, _q(ns, "Name")).text = name
    first, rest = _split_ids(idents)
    if first:
        etree.SubElement(el, _q(ns, "Id")).text = first.id
        _type_id(el, ns, first.type)
    for extra in rest:
        _additional(el, ns, extra)


def _type_id(el: etree._Element, ns: str, value: str) -> None:
    t = etree.SubElement(el, _q(ns, "TypeId"))
    t.set("V", value)
    t.set("DN", ID_TYPE_TEXT.get(value, value))


def _additional(el: etree._Element, ns: str, ident: Ident) -> None:
    a = etree.SubElement(el, _q(ns, "AdditionalId"))
    etree.SubElement(a, _q(ns, "Id")).text = ident.id
    t = etree.SubElement(a, _q(ns, "Type"))
    t.set("V", ident.type)
    t.set("DN", ID_TYPE_TEXT.get(ident.type, ident.type))


def _xml_datetime(value: str | None, fallback: datetime) -> str:
    parsed = parse_kith_datetime(value)
    return (parsed or fallback).isoformat(timespec="seconds")


def build_xml(msg: Message, d: AppRecDecision, now: datetime) -> bytes:
    assert d.version is not None and d.status is not None and d.role is not None
    ns = NS[d.version]

    def q(name: str) -> str:
        return _q(ns, name)

    root = etree.Element(q("AppRec"), nsmap={None: ns})
    mt = etree.SubElement(root, q("MsgType"))
    mt.set("V", "APPREC")
    mt.set("DN", "Applikasjonskvittering")
    etree.SubElement(root, q("MIGversion")).text = MIG[d.version]
    etree.SubElement(root, q("SoftwareName")).text = "pfhjem-msg"
    etree.SubElement(root, q("SoftwareVersion")).text = __version__
    etree.SubElement(root, q("GenDate")).text = now.isoformat(timespec="seconds")
    etree.SubElement(root, q("Id")).text = d.apprec_id
    for tag, party, role, drop in (
        ("Sender", d.our_party or Party(), d.role, False),
        ("Receiver", msg.sender or Party(), codes.ROLE_SENDER, msg.root == "Message"),
    ):
        holder = etree.SubElement(root, q(tag))
        r = etree.SubElement(holder, q("Role"))
        r.set("V", role[0])
        r.set("DN", role[1])
        _hcp(holder, ns, party, drop)
    status = etree.SubElement(root, q("Status"))
    status.set("V", d.status)
    status.set("DN", codes.APPREC_STATUS[d.status])
    for code, extra in d.errors:
        e = etree.SubElement(root, q("Error"))
        e.set("V", code)
        e.set("S", codes.APPREC_ERROR_SYSTEM)
        e.set("DN", codes.APPREC_ERRORS[code])
        if extra:
            e.set("OT", extra[:250])
    original = etree.SubElement(root, q("OriginalMsgId"))
    omt = etree.SubElement(original, q("MsgType"))
    msg_type = msg.msg_type.value if msg.msg_type else "EPIKRISE" if msg.root == "Message" else "UKJENT"
    omt.set("V", msg_type)
    omt.set(
        "DN",
        (msg.msg_type.text if msg.msg_type and msg.msg_type.text else None)
        or codes.MESSAGE_TYPES.get(msg_type, msg_type),
    )
    etree.SubElement(original, q("IssueDate")).text = _xml_datetime(msg.gen_date, now)
    etree.SubElement(original, q("Id")).text = msg.msg_id or ""
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def apprec_status(xml: bytes) -> str:
    """The status code (8258) of an AppRec we built, with its error codes: «2 E21», «1»;
    «?» when it cannot be read (a payload pruned by retention)."""
    try:
        root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return "?"
    status = root.find("{*}Status")
    errors = [e.get("V", "") for e in root.findall("{*}Error")]
    value = status.get("V", "?") if status is not None else "?"
    return " ".join([value, *errors])
