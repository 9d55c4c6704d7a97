"""Reading Epikrise 1.1 and 1.2 (``Message``), standalone or wrapped in MsgHead."""

from __future__ import annotations

from lxml import etree

from pfhjem_msg.kith.model import (
    Code,
    Comment,
    Diagnosis,
    EpikrisePayload,
    Ident,
    Message,
    Party,
    PartyLevel,
    Patient,
)
from pfhjem_msg.kith.parse import namespace, text_of
from pfhjem_msg.kith.walk import Reader, attr, child, children, read_attachment, text

VERSIONS = {
    "http://www.kith.no/xmlstds/epikrise/2012-02-15": "1.2",
    "http://www.kith.no/xmlstds/epikrise/2006-09-23": "1.1",
}
DIAGNOSIS_KINDS = frozenset({"H", "B"})


def _ident(r: Reader, holder: etree._Element, person: bool) -> list[Ident]:
    """Id + TypeId of an Inst, Dept, HCPerson or HCProf, plus its AdditionalIds."""
    idents: list[Ident] = []
    id_text = text(holder, "Id")
    type_code = r.code(holder, "TypeId")
    if id_text and type_code:
        idents.append(Ident(id_text, type_code.value.upper(), type_code.system))
    for extra in children(holder, "AdditionalId"):
        extra_id, extra_type = text(extra, "Id"), r.code(extra, "Type")
        if extra_id and extra_type:
            idents.append(Ident(extra_id, extra_type.value.upper(), extra_type.system))
    return idents


def read_hcp(r: Reader, holder: etree._Element | None, role: Code | None = None) -> Party | None:
    """HCP (Inst with Dept and HCPerson, or HCProf) as an address, highest level first."""
    hcp = child(holder, "HCP")
    if hcp is None:
        return None
    party = Party(role=role)
    inst = child(hcp, "Inst")
    if inst is not None:
        party.levels.append(
            PartyLevel("organisation", text(inst, "Name"), _ident(r, inst, False), r.path(inst))
        )
        for dept in children(inst, "Dept"):
            party.levels.append(
                PartyLevel("department", text(dept, "Name"), _ident(r, dept, False), r.path(dept))
            )
        for person in children(inst, "HCPerson"):
            party.levels.append(
                PartyLevel("professional", text(person, "Name"), _ident(r, person, True), r.path(person))
            )
    prof = child(hcp, "HCProf")
    if prof is not None:
        party.levels.append(
            PartyLevel("professional", text(prof, "Name"), _ident(r, prof, True), r.path(prof))
        )
    return party


def _patient(r: Reader, el: etree._Element) -> Patient:
    name = text(el, "Name") or ""
    family, _, given = name.partition(",")
    idents: list[Ident] = []
    off_id, off_type = text(el, "OffId"), r.code(el, "TypeOffId")
    if off_id:
        idents.append(
            Ident(
                off_id, off_type.value.upper() if off_type else "FNR", off_type.system if off_type else None
            )
        )
    for extra in children(el, "AdditionalId"):
        extra_id, extra_type = text(extra, "Id"), r.code(extra, "Type")
        if extra_id and extra_type:
            idents.append(Ident(extra_id, extra_type.value.upper(), extra_type.system))
    birth = attr(el, "DateOfBirth")
    return Patient(
        family_name=family.strip() or None,
        given_name=given.strip() or None,
        birth_date=birth[:10] if birth else None,
        sex=attr(el, "Sex"),
        idents=idents,
    )


def _events(r: Reader, event: etree._Element, payload: EpikrisePayload) -> None:
    for comment in children(event, "Comment"):
        payload.comments.append(
            Comment(r.path(comment), r.code(comment, "Heading"), text_of(child(comment, "TextResultValue")))
        )
    service = child(event, "Service")
    serv_id = r.code(service, "ServId")
    if serv_id is not None and service is not None:
        payload.services.append((r.path(child(service, "ServId")), serv_id))
    for item in children(event, "InfItem"):
        kind = attr(item, "Type")
        concept = child(child(child(item, "Observation"), "CodedDescr"), "Concept")
        code = r.code(concept)
        if code is not None and concept is not None and (kind or "").upper() in DIAGNOSIS_KINDS:
            when = attr(item, "StartDateTime") or attr(item, "OrgDate")
            payload.diagnoses.append(Diagnosis(r.path(concept), code, kind, when))
    for sub in children(event, "Event"):
        _events(r, sub, payload)


def read_epikrise(r: Reader, root: etree._Element) -> Message:
    """The header (ids, patient, parties) now; the clinical content when first asked for."""
    version = VERSIONS.get(namespace(root), "1.2")
    msg = Message(standard="epikrise-1.2" if version == "1.2" else "epikrise-1.1", root="Message")
    msg.msg_type = r.code(root, "Type") or Code("EPIKRISE", None, "Epikrise")
    msg.msg_id = text(root, "MsgId")
    msg.gen_date = attr(root, "GenDate")
    msg.payload_namespace = namespace(root)
    report = child(root, "ServRprt")
    patients = children(report, "Patient")
    msg.patient_count = len(patients)
    if patients:
        msg.patient = _patient(r, patients[0])
    msg.sender = read_hcp(r, child(report, "ServProvider"))
    msg.receiver = read_hcp(r, child(report, "Requester"), Code("PRIM", None, "Primærmottaker"))
    msg.other_receivers = [
        p
        for p in (read_hcp(r, c, Code("COP", None, "Kopimottaker")) for c in children(report, "CopyDest"))
        if p
    ]
    for refdoc in children(report, "RefDoc"):
        msg.attachments.append(read_attachment(r, refdoc))
    descr = child(report, "MsgDescr")
    if descr is not None and text(descr):
        msg.document_descriptions.append((r.path(descr), text(descr) or ""))
    quiet = Reader(r.root, quiet=True)
    msg.defer_payload(lambda: _content(quiet, report, msg, version))
    return msg


def _content(r: Reader, report: etree._Element | None, msg: Message, version: str) -> EpikrisePayload:
    payload = EpikrisePayload(
        version=version,
        msg_descr=text(report, "MsgDescr"),
        serv_type=r.code(report, "ServType"),
        status=r.code(report, "Status"),
        issue_date=attr(report, "IssueDate"),
        serv_provider=msg.sender,
        requester=msg.receiver,
        copy_dest=list(msg.other_receivers),
    )
    for req in children(report, "ServReq"):
        for diag in children(req, "Diagnosis"):
            concept = child(diag, "Concept")
            code = r.code(concept)
            if code is not None and concept is not None:
                payload.diagnoses.append(Diagnosis(r.path(concept), code, "referral", attr(req, "IssueDate")))
    for event in children(report, "Event"):
        _events(r, event, payload)
    for patient in children(report, "Patient")[:1]:
        for rel in children(patient, "PatRelHCP"):
            party = read_hcp(r, rel, r.code(rel, "Relation"))
            if party is not None:
                payload.gp_relations.append(party)
    return payload
