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
from pfhjem_msg.kith.writer import XmlWriter

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


def _hcp(w: XmlWriter, party: Party, drop_persons: bool) -> None:
    w.open("HCP")
    levels = list(party.levels)
    orgs = [lvl for lvl in levels if lvl.kind in ("organisation", "department")]
    persons = [lvl for lvl in levels if lvl.kind not in ("organisation", "department")]
    if not levels:
        w.open("Inst")
        w.leaf("Name", "Ukjent")
        w.close("Inst")
    elif not orgs:
        w.open("HCProf")
        _named_ids(w, persons[0].name, persons[0].idents)
        w.close("HCProf")
    else:
        w.open("Inst")
        top = orgs[0]
        if top.name:
            w.leaf("Name", top.name)
        first, rest = _split_ids(top.idents)
        if first:
            w.leaf("Id", first.id)
            _type_id(w, "TypeId", first.type)
        for dept in orgs[1:]:
            if dept.name or dept.idents:
                w.open("Dept")
                _named_ids(w, dept.name, dept.idents)
                w.close("Dept")
        for extra in rest:
            _additional(w, extra)
        for person in [] if drop_persons else persons:
            w.open("HCPerson")
            _named_ids(w, person.name, person.idents)
            w.close("HCPerson")
        w.close("Inst")
    w.close("HCP")


def _split_ids(idents: list[Ident]) -> tuple[Ident | None, list[Ident]]:
    """HER-id first (it is what the AppRec is routed on); the others become AdditionalId.
    A health worker's own national id is left out: routing never needs it."""
    ordered = sorted((i for i in idents if i.type not in PRIVATE_ID_TYPES), key=lambda i: i.type != "HER")
    return (ordered[0], ordered[1:]) if ordered else (None, [])


def _named_ids(w: XmlWriter, name: str | None, idents: list[Ident]) -> None:
    if name:
        w.leaf("Name", name)
    first, rest = _split_ids(idents)
    if first:
        w.leaf("Id", first.id)
        _type_id(w, "TypeId", first.type)
    for extra in rest:
        _additional(w, extra)


def _type_id(w: XmlWriter, tag: str, value: str) -> None:
    w.leaf(tag, V=value, DN=ID_TYPE_TEXT.get(value, value))


def _additional(w: XmlWriter, ident: Ident) -> None:
    w.open("AdditionalId")
    w.leaf("Id", ident.id)
    _type_id(w, "Type", ident.type)
    w.close("AdditionalId")


def _xml_datetime(value: str | None, fallback: datetime) -> str:
    parsed = parse_kith_datetime(value)
    return (parsed or fallback).isoformat(timespec="seconds")


def build_xml(msg: Message, d: AppRecDecision, now: datetime) -> bytes:
    assert d.version is not None and d.status is not None and d.role is not None
    w = XmlWriter()
    w.open("AppRec", xmlns=NS[d.version])
    w.leaf("MsgType", V="APPREC", DN="Applikasjonskvittering")
    w.leaf("MIGversion", MIG[d.version])
    w.leaf("SoftwareName", "pfhjem-msg")
    w.leaf("SoftwareVersion", __version__)
    w.leaf("GenDate", now.isoformat(timespec="seconds"))
    w.leaf("Id", d.apprec_id)
    for tag, party, role, drop in (
        ("Sender", d.our_party or Party(), d.role, False),
        ("Receiver", msg.sender or Party(), codes.ROLE_SENDER, msg.root == "Message"),
    ):
        w.open(tag)
        w.leaf("Role", V=role[0], DN=role[1])
        _hcp(w, party, drop)
        w.close(tag)
    w.leaf("Status", V=d.status, DN=codes.APPREC_STATUS[d.status])
    for code, extra in d.errors:
        w.leaf("Error", V=code, S=codes.APPREC_ERROR_SYSTEM, DN=codes.APPREC_ERRORS[code],
               OT=extra[:250] if extra else None)  # fmt: skip
    w.open("OriginalMsgId")
    msg_type = msg.msg_type.value if msg.msg_type else "EPIKRISE" if msg.root == "Message" else "UKJENT"
    shown = msg.msg_type.text if msg.msg_type and msg.msg_type.text else None
    w.leaf("MsgType", V=msg_type, DN=shown or codes.MESSAGE_TYPES.get(msg_type, msg_type))
    w.leaf("IssueDate", _xml_datetime(msg.gen_date, now))
    w.leaf("Id", msg.msg_id or "")
    w.close("OriginalMsgId")
    w.close("AppRec")
    return w.to_bytes()


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
