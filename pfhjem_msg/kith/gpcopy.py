"""Dialogmeldinger we write: the copy to the patient's GP (a new MsgHead + Dialogmelding 1.1,
Helsefaglig dialog, from the municipality to the GP office with the GP as HealthcareProfessional,
the topic «Pakkeforløp hjem for pasienter med kreft», the original's text and its PDF, JPEG and
PNG attachments), and the same kind of message for follow-up reminders to a municipal unit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from pfhjem_msg.kith.model import DialogPayload, EpikrisePayload, Message, Patient
from pfhjem_msg.kith.parse import local
from pfhjem_msg.kith.signature import SigningKey, sign

MH = "http://www.kith.no/xmlstds/msghead/2006-05-24"
DIALOG = "http://www.kith.no/xmlstds/dialog/2013-01-23"
B64 = "http://www.kith.no/xmlstds/base64container"
S9051 = "2.16.578.1.12.4.1.1.9051"
S8116 = "2.16.578.1.12.4.1.1.8116"
TOPIC = "Pakkeforløp hjem for pasienter med kreft"
CARRIED_TYPES = frozenset({"application/pdf", "image/jpeg", "image/png"})


@dataclass(frozen=True)
class Party:
    organisation: str
    organisation_her: str
    unit: str
    unit_her: str | None


@dataclass(frozen=True)
class GPAddress:
    office: str
    office_her: str
    gp_name: str
    gp_her: str


def _el(
    parent: etree._Element, name: str, text: str | None = None, ns: str = MH, **attrs: str
) -> etree._Element:
    el = etree.SubElement(parent, f"{{{ns}}}{name}")
    if text is not None:
        el.text = text
    for k, v in attrs.items():
        el.set(k, v)
    return el


def _ident(parent: etree._Element, her: str, system: str) -> None:
    ident = _el(parent, "Ident")
    _el(ident, "Id", her)
    _el(ident, "TypeId", V="HER", DN="HER-id", S=system)


def original_text(msg: Message) -> str:
    """The readable content of the original, as plain text with its headings."""
    parts: list[str] = []
    payload = msg.payload
    if isinstance(payload, DialogPayload):
        for note in payload.notes:
            parts += [x for x in (note.tema, note.text) if x]
        for req in payload.requests:
            parts += [x for x in (req.subject, req.text) if x]
    elif isinstance(payload, EpikrisePayload):
        if payload.msg_descr:
            parts.append(payload.msg_descr)
        for c in payload.comments:
            heading = c.heading.text if c.heading and c.heading.text else None
            parts.append(f"{heading}:\n{c.text}" if heading else c.text)
    return "\n\n".join(p for p in parts if p.strip())


def carried_attachments(original_root: etree._Element | None) -> list[etree._Element]:
    """RefDocs of the original with an inline PDF, JPEG or PNG."""
    if original_root is None:
        return []
    out = []
    for refdoc in original_root.iter("{*}RefDoc"):
        mime = refdoc.find("{*}MimeType")
        content = refdoc.find("{*}Content")
        if mime is None or content is None or (mime.text or "").strip().lower() not in CARRIED_TYPES:
            continue
        container = next((c for c in content.iter() if local(c) == "Base64Container"), None)
        if container is not None:
            out.append(refdoc)
    return out


@dataclass(frozen=True)
class Unit:
    """A receiving organisation and, under it, the unit (service) the message is for."""

    organisation: str
    organisation_her: str
    unit: str | None
    unit_her: str | None


def build(
    msg: Message,
    sender: Party,
    gp: GPAddress,
    now: datetime,
    original_root: etree._Element | None = None,
    signing: SigningKey | None = None,
    msg_id: str | None = None,
) -> tuple[str, bytes]:
    """(MsgId, XML bytes) of the GP copy."""
    sent = msg.msg_type.value if msg.msg_type else "melding"
    origin = msg.sender.organisation_name if msg.sender and msg.sender.organisation_name else "sykehuset"
    header = f"Videresendt fra {sender.organisation}: {sent} fra {origin} (MsgId {msg.msg_id}).\n\n"
    return build_dialog(sender, gp, msg.patient, header + original_text(msg), now,
                        carried_attachments(original_root), signing, msg_id)  # fmt: skip


def build_dialog(
    sender: Party,
    receiver: GPAddress | Unit,
    patient: Patient | None,
    text: str,
    now: datetime,
    attachments: list[etree._Element] | tuple[()] = (),
    signing: SigningKey | None = None,
    msg_id: str | None = None,
) -> tuple[str, bytes]:
    """(MsgId, XML bytes) of a MsgHead + Dialogmelding 1.1 «Helsefaglig dialog» on the topic
    «Pakkeforløp hjem for pasienter med kreft»: the GP copy, and follow-up reminders."""
    msg_id = msg_id or str(uuid.uuid4())
    root = etree.Element(f"{{{MH}}}MsgHead", nsmap={None: MH})
    info = _el(root, "MsgInfo")
    _el(info, "Type", V="DIALOG_HELSEFAGLIG", DN="Helsefaglig dialog")
    _el(info, "MIGversion", "v1.2 2006-05-24")
    _el(info, "GenDate", now.isoformat(timespec="seconds"))
    _el(info, "MsgId", msg_id)
    org = _el(_el(info, "Sender"), "Organisation")
    _el(org, "OrganisationName", sender.organisation)
    _ident(org, sender.organisation_her, S9051)
    if sender.unit_her:
        sub = _el(org, "Organisation")
        _el(sub, "OrganisationName", sender.unit)
        _ident(sub, sender.unit_her, S9051)
    if isinstance(receiver, GPAddress):
        office = _el(_el(info, "Receiver"), "Organisation")
        _el(office, "OrganisationName", receiver.office)
        _ident(office, receiver.office_her, S9051)
        hcp = _el(office, "HealthcareProfessional")
        _el(hcp, "RoleToPatient", V="6", S="2.16.578.1.12.4.1.1.9034", DN="Fastlege")
        given, _, family = receiver.gp_name.rpartition(" ")
        _el(hcp, "FamilyName", family or receiver.gp_name)
        if given:
            _el(hcp, "GivenName", given)
        _ident(hcp, receiver.gp_her, S8116)
    else:
        org = _el(_el(info, "Receiver"), "Organisation")
        _el(org, "OrganisationName", receiver.organisation)
        _ident(org, receiver.organisation_her, S9051)
        if receiver.unit_her:
            sub = _el(org, "Organisation")
            _el(sub, "OrganisationName", receiver.unit or receiver.organisation)
            _ident(sub, receiver.unit_her, S9051)
    p = patient
    if p is not None:
        node_patient = _el(info, "Patient")
        for tag, value in (
            ("FamilyName", p.family_name),
            ("MiddleName", p.middle_name),
            ("GivenName", p.given_name),
        ):
            if value:
                _el(node_patient, tag, value)
        if p.birth_date and len(p.birth_date) == 10:
            _el(node_patient, "DateOfBirth", p.birth_date)
        if p.sex:
            _el(node_patient, "Sex", V=p.sex)
        for ident in p.idents:
            if ident.type in ("FNR", "DNR", "HNR", "FHN", "DUF"):
                node = _el(node_patient, "Ident")
                _el(node, "Id", ident.id)
                _el(node, "TypeId", V=ident.type, S=S8116)
    refdoc = _el(_el(root, "Document"), "RefDoc")
    _el(refdoc, "IssueDate", V=now.isoformat(timespec="seconds"))
    _el(refdoc, "MsgType", V="XML", DN="XML-instans")
    _el(refdoc, "MimeType", "text/xml")
    dialog = etree.SubElement(_el(refdoc, "Content"), f"{{{DIALOG}}}Dialogmelding", nsmap={None: DIALOG})
    note = _el(dialog, "Notat", ns=DIALOG)
    _el(note, "TemaKodet", ns=DIALOG, V="6", S="2.16.578.1.12.4.1.1.7322", DN="Henvendelse om pasient")
    _el(note, "Tema", TOPIC, ns=DIALOG)
    _el(note, "TekstNotatInnhold", text, ns=DIALOG)
    _el(note, "DatoNotat", now.date().isoformat(), ns=DIALOG)
    for attachment in attachments:
        doc = _el(root, "Document")
        _el(doc, "DocumentConnection", V="V", DN="Vedlegg")
        ref = _el(doc, "RefDoc")
        _el(ref, "MsgType", V="A", DN="Vedlegg")
        mime = attachment.find("{*}MimeType")
        _el(ref, "MimeType", (mime.text or "").strip() if mime is not None else "application/pdf")
        description = attachment.find("{*}Description")
        if description is not None and description.text:
            _el(ref, "Description", description.text.strip())
        container = next(c for c in attachment.find("{*}Content").iter() if local(c) == "Base64Container")
        _el(_el(ref, "Content"), "Base64Container", "".join((container.text or "").split()), ns=B64)
    if signing is not None:
        root = sign(root, signing)
    return msg_id, bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
