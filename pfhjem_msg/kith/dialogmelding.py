"""Reading Dialogmelding 1.0 and 1.1 payloads: notes, requests and related persons."""

from __future__ import annotations

from lxml import etree

from pfhjem_msg.kith.model import DialogPayload, Note, Party, PartyKind, RelatedRole, Request
from pfhjem_msg.kith.parse import text_of
from pfhjem_msg.kith.walk import Reader, child, children, person_name, text


def _roles(r: Reader, holder: etree._Element, out: list[RelatedRole]) -> None:
    for el in children(holder, "RollerRelatertNotat"):
        role = RelatedRole(r.path(el), r.code(el, "RolleNotat"), r.code(el, "RoleToPatient"))
        unit = child(el, "TilknyttetEnhet")
        person_holder = unit if unit is not None and child(el, "HealthcareProfessional") is None else el
        wanted: tuple[tuple[str, PartyKind], ...] = (
            ("HealthcareProfessional", "professional"),
            ("Person", "person"),
        )
        for name, kind in wanted:
            node = child(person_holder, name)
            if node is not None:
                role.person = r.level(node, kind, person_name(node))
        if unit is not None:
            contact = child(unit, "Kontaktenhet")
            if contact is not None:
                role.unit = _fk1_organisation(r, contact)
        out.append(role)


def _fk1_organisation(r: Reader, org: etree._Element) -> Party:
    party = Party()
    node: etree._Element | None = org
    kind: PartyKind = "organisation"
    while node is not None:
        party.levels.append(r.level(node, kind, text(node, "OrganisationName")))
        node = child(node, "Organisation")
        kind = "department"
    return party


def _request(r: Reader, el: etree._Element, payload: DialogPayload) -> Request:
    req = Request(
        path=r.path(el),
        type=r.code(el, "TypeForesp"),
        subject=text(el, "EmneSporsmal"),
        text=text_of(child(el, "Sporsmal")),
        reason=text(el, "Begrunnelse"),
    )
    _roles(r, el, payload.roles)
    return req


def read_dialog(r: Reader, root: etree._Element, version: str) -> DialogPayload:
    payload = DialogPayload(version=version, case_type=r.code(root, "SakstypeKodet"))
    for el in children(root, "Foresporsel"):
        payload.requests.append(_request(r, el, payload))
    for el in children(root, "Notat"):
        note = Note(
            path=r.path(el),
            tema_kodet=r.code(el, "TemaKodet"),
            tema=text(el, "Tema"),
            text=text_of(child(el, "TekstNotatInnhold")),
            merknad=text(el, "Merknad"),
            date=text(el, "DatoNotat"),
        )
        payload.notes.append(note)
        quoted = child(el, "Foresporsel")
        if quoted is not None:  # the request an answer quotes
            payload.requests.append(_request(r, quoted, payload))
        _roles(r, el, payload.roles)
    return payload
