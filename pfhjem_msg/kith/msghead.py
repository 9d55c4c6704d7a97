"""Reading MsgHead 1.2: the header, the payload document and the attachments."""

from __future__ import annotations

from lxml import etree

from pfhjem_msg.kith import dialogmelding, epikrise
from pfhjem_msg.kith.model import Message, Party, PartyKind, Patient
from pfhjem_msg.kith.parse import local, namespace
from pfhjem_msg.kith.walk import Reader, attr, child, children, person_name, read_attachment, text

DIALOG_1_0 = "http://www.kith.no/xmlstds/dialog/2006-10-11"
DIALOG_1_1 = "http://www.kith.no/xmlstds/dialog/2013-01-23"


def read_organisation(r: Reader, org: etree._Element, role_el: etree._Element | None = None) -> Party:
    """Organisation → sub-Organisation(s) → HealthcareProfessional, highest level first."""
    party = Party(role=r.code(role_el) if role_el is not None else None)
    node: etree._Element | None = org
    kind: PartyKind = "organisation"
    while node is not None:
        party.levels.append(r.level(node, kind, text(node, "OrganisationName")))
        hcp = child(node, "HealthcareProfessional")
        if hcp is not None:
            party.levels.append(r.level(hcp, "professional", person_name(hcp)))
        node = child(node, "Organisation")
        kind = "department"
    return party


def read_patient(r: Reader, el: etree._Element) -> Patient:
    idents = [i for i in (r.ident(x, person=True) for x in children(el, "Ident")) if i]
    return Patient(
        family_name=text(el, "FamilyName"),
        given_name=text(el, "GivenName"),
        middle_name=text(el, "MiddleName"),
        birth_date=text(el, "DateOfBirth"),
        sex=attr(el, "Sex"),
        idents=idents,
    )


def read_party(r: Reader, holder: etree._Element | None) -> Party | None:
    org = child(holder, "Organisation")
    if org is None:
        return None
    return read_organisation(r, org)


def read_other_receiver(r: Reader, el: etree._Element) -> Party:
    role = child(el, "RoleReceiver")
    org = child(el, "Organisation")
    if org is not None:
        return read_organisation(r, org, role)
    party = Party(role=r.code(role) if role is not None else None)
    wanted: tuple[tuple[str, PartyKind], ...] = (
        ("HealthcareProfessional", "professional"),
        ("Person", "person"),
        ("Patient", "patient"),
    )
    for name, kind in wanted:
        node = child(el, name)
        if node is not None:
            party.levels.append(r.level(node, kind, person_name(node)))
    return party


def _is_payload(el: etree._Element) -> bool:
    name, ns = local(el), namespace(el)
    return (name == "Dialogmelding" and ns in (DIALOG_1_0, DIALOG_1_1)) or (
        name == "Message" and ns in epikrise.VERSIONS
    )


def _find_payload(r: Reader, content: etree._Element | None) -> etree._Element | None:
    """The payload is selected by namespace and root name: the first element of Content, or,
    when a sender has nested something else around it (a whole MsgHead, seen in practice),
    the first known payload below."""
    if content is None:
        return None
    first = next((c for c in content if isinstance(c.tag, str)), None)
    if first is None or _is_payload(first):
        return first
    for el in first.iter(tag=etree.Element):
        if _is_payload(el):
            r.deviation("PAYLOAD_NESTED", f"the payload is nested inside <{local(first)}> in Content", el)
            return el
    return first


def read_msghead(r: Reader, root: etree._Element) -> Message:
    info = child(root, "MsgInfo")
    msg = Message(standard="msghead-1.2", root="MsgHead")
    msg.msg_type = r.code(info, "Type")
    msg.msg_id = text(info, "MsgId")
    msg.gen_date = text(info, "GenDate")
    conv = child(info, "ConversationRef")
    msg.conversation_parent = text(conv, "RefToParent")
    msg.conversation_ref = text(conv, "RefToConversation")
    msg.sender = read_party(r, child(info, "Sender"))
    msg.receiver = read_party(r, child(info, "Receiver"))
    msg.other_receivers = [read_other_receiver(r, x) for x in children(info, "OtherReceiver")]
    patients = children(info, "Patient")
    msg.patient_count = len(patients)
    if patients:
        msg.patient = read_patient(r, patients[0])

    documents = children(root, "Document")
    payload_refdoc: etree._Element | None = None
    for doc in documents:
        refdoc = child(doc, "RefDoc")
        for label in ("ContentDescription",):
            value = text(doc, label)
            if value:
                msg.document_descriptions.append((r.path(child(doc, label)), value))
        desc = text(refdoc, "Description")
        if desc:
            msg.document_descriptions.append((r.path(child(refdoc, "Description")), desc))
        if refdoc is None:
            continue
        is_xml = attr(refdoc, "MsgType") == "XML"
        content = child(refdoc, "Content")
        if payload_refdoc is None and is_xml and content is not None and len(content):
            payload_refdoc = refdoc
        else:
            msg.attachments.append(read_attachment(r, refdoc))

    payload_root = None
    if payload_refdoc is not None:
        payload_root = _find_payload(r, child(payload_refdoc, "Content"))
    if payload_root is None:
        return msg
    ns = namespace(payload_root)
    msg.payload_namespace = ns
    if local(payload_root) == "Dialogmelding" and ns in (DIALOG_1_0, DIALOG_1_1):
        version = "1.0" if ns == DIALOG_1_0 else "1.1"
        msg.standard = "dialogmelding-1.0" if version == "1.0" else "dialogmelding-1.1"
        quiet = Reader(r.root, quiet=True)
        msg.defer_payload(lambda: dialogmelding.read_dialog(quiet, payload_root, version))
    elif local(payload_root) == "Message" and ns in epikrise.VERSIONS:
        inner = epikrise.read_epikrise(r, payload_root)
        msg.standard = inner.standard
        msg.defer_payload(lambda: inner.payload)
        msg.document_descriptions.extend(inner.document_descriptions)
        msg.attachments.extend(inner.attachments)
        if msg.patient is None:
            msg.patient, msg.patient_count = inner.patient, inner.patient_count
    return msg
