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
from pfhjem_msg.kith.writer import XmlWriter

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


def _ident(w: XmlWriter, her: str, system: str) -> None:
    w.open("Ident")
    w.leaf("Id", her)
    w.leaf("TypeId", V="HER", DN="HER-id", S=system)
    w.close("Ident")


def _organisation(w: XmlWriter, name: str, her: str, unit: str | None, unit_her: str | None) -> None:
    w.open("Organisation")
    w.leaf("OrganisationName", name)
    _ident(w, her, S9051)
    if unit_her:
        w.open("Organisation")
        w.leaf("OrganisationName", unit or name)
        _ident(w, unit_her, S9051)
        w.close("Organisation")
    w.close("Organisation")


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
    gp: GPAddress | Unit,
    now: datetime,
    original_root: etree._Element | None = None,
    signing: SigningKey | None = None,
    msg_id: str | None = None,
) -> tuple[str, bytes]:
    """(MsgId, XML bytes) of the GP copy; addressed to a ``Unit``, the forwarded copy a case
    unit gets through the message service (the original is addressed to us, not to it)."""
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
    w = XmlWriter()
    w.open("MsgHead", xmlns=MH)
    w.open("MsgInfo")
    w.leaf("Type", V="DIALOG_HELSEFAGLIG", DN="Helsefaglig dialog")
    w.leaf("MIGversion", "v1.2 2006-05-24")
    w.leaf("GenDate", now.isoformat(timespec="seconds"))
    w.leaf("MsgId", msg_id)
    w.open("Sender")
    _organisation(w, sender.organisation, sender.organisation_her, sender.unit, sender.unit_her)
    w.close("Sender")
    w.open("Receiver")
    if isinstance(receiver, GPAddress):
        w.open("Organisation")
        w.leaf("OrganisationName", receiver.office)
        _ident(w, receiver.office_her, S9051)
        w.open("HealthcareProfessional")
        w.leaf("RoleToPatient", V="6", S="2.16.578.1.12.4.1.1.9034", DN="Fastlege")
        given, _, family = receiver.gp_name.rpartition(" ")
        w.leaf("FamilyName", family or receiver.gp_name)
        if given:
            w.leaf("GivenName", given)
        _ident(w, receiver.gp_her, S8116)
        w.close("HealthcareProfessional")
        w.close("Organisation")
    else:
        _organisation(w, receiver.organisation, receiver.organisation_her, receiver.unit, receiver.unit_her)
    w.close("Receiver")
    p = patient
    if p is not None:
        w.open("Patient")
        for tag, value in (
            ("FamilyName", p.family_name),
            ("MiddleName", p.middle_name),
            ("GivenName", p.given_name),
        ):
            if value:
                w.leaf(tag, value)
        if p.birth_date and len(p.birth_date) == 10:
            w.leaf("DateOfBirth", p.birth_date)
        if p.sex:
            w.leaf("Sex", V=p.sex)
        for ident in p.idents:
            if ident.type in ("FNR", "DNR", "HNR", "FHN", "DUF"):
                w.open("Ident")
                w.leaf("Id", ident.id)
                w.leaf("TypeId", V=ident.type, S=S8116)
                w.close("Ident")
        w.close("Patient")
    w.close("MsgInfo")
    w.open("Document")
    w.open("RefDoc")
    w.leaf("IssueDate", V=now.isoformat(timespec="seconds"))
    w.leaf("MsgType", V="XML", DN="XML-instans")
    w.leaf("MimeType", "text/xml")
    w.open("Content")
    w.open("Dialogmelding", xmlns=DIALOG)
    w.open("Notat")
    w.leaf("TemaKodet", V="6", S="2.16.578.1.12.4.1.1.7322", DN="Henvendelse om pasient")
    w.leaf("Tema", TOPIC)
    w.leaf("TekstNotatInnhold", text)
    w.leaf("DatoNotat", now.date().isoformat())
    w.close("Notat")
    w.close("Dialogmelding")
    w.close("Content")
    w.close("RefDoc")
    w.close("Document")
    for attachment in attachments:
        w.open("Document")
        w.leaf("DocumentConnection", V="V", DN="Vedlegg")
        w.open("RefDoc")
        w.leaf("MsgType", V="A", DN="Vedlegg")
        mime = attachment.find("{*}MimeType")
        w.leaf("MimeType", (mime.text or "").strip() if mime is not None else "application/pdf")
        description = attachment.find("{*}Description")
        if description is not None and description.text:
            w.leaf("Description", description.text.strip())
        container = next(c for c in attachment.find("{*}Content").iter() if local(c) == "Base64Container")
        w.open("Content")
        w.leaf("Base64Container", "".join((container.text or "").split()), xmlns=B64)
        w.close("Content")
        w.close("RefDoc")
        w.close("Document")
    w.close("MsgHead")
    xml = w.to_bytes()
    if signing is not None:
        root = etree.fromstring(xml, etree.XMLParser(resolve_entities=False, no_network=True))
        xml = bytes(etree.tostring(sign(root, signing), xml_declaration=True, encoding="UTF-8"))
    return msg_id, xml
