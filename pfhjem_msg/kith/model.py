"""The typed model of a received message: what routing, detection, the AppRec and the
follow-up plan need, read leniently from whatever a sender wrote.

Everything here may hold patient data (names, national ids, free text). It lives in memory
and in the store, never in logs: ``__repr__`` of the classes that carry such data is masked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    from pfhjem_msg.kith.parse import Where

Standard = Literal[
    "msghead-1.2",
    "dialogmelding-1.0",
    "dialogmelding-1.1",
    "epikrise-1.1",
    "epikrise-1.2",
    "apprec-1.0",
    "apprec-1.1",
    "unknown",
]


class Code(NamedTuple):
    """A coded value: V, the code system (S, an OID) when given, and the display text DN."""

    value: str
    system: str | None = None
    text: str | None = None


class Ident(NamedTuple):
    id: str
    type: str
    """The id type code (FNR, DNR, HER, HPR, ENH ...), trimmed and upper-cased."""
    system: str | None = None

    def __repr__(self) -> str:
        shown = self.id if self.type in ("HER", "ENH", "RSH", "HPR") else "***"
        return f"Ident({shown!r}, {self.type!r})"


PartyKind = Literal["organisation", "department", "professional", "person", "patient"]


@dataclass
class PartyLevel:
    """One level of an address: an organisation, a sub-unit, or a person at the lowest level."""

    kind: PartyKind
    name: str | None
    idents: list[Ident] = field(default_factory=list)
    path: Where | None = None
    role_to_patient: Code | None = None
    """For a HealthcareProfessional: RoleToPatient (9034; 6 = fastlege)."""

    @property
    def her_id(self) -> str | None:
        for i in self.idents:  # a plain loop: read several times for every message
            if i.type == "HER":
                return i.id
        return None

    def __repr__(self) -> str:
        return f"PartyLevel({self.kind}, her={self.her_id!r})"


@dataclass
class Party:
    """An address: levels from the highest (organisation) to the lowest (department, service
    or person). Service-based addressing puts the communication party at the lowest level."""

    levels: list[PartyLevel] = field(default_factory=list)
    role: Code | None = None
    """The receiver role (8112 RoleReceiver for copies; Epikrise Role)."""

    @property
    def her_ids(self) -> list[str]:
        return [h for h in (lvl.her_id for lvl in self.levels) if h]

    @property
    def lowest_her_id(self) -> str | None:
        ids = self.her_ids
        return ids[-1] if ids else None

    @property
    def organisation_name(self) -> str | None:
        return self.levels[0].name if self.levels else None

    def __repr__(self) -> str:
        return f"Party(her_ids={self.her_ids!r})"


@dataclass
class Patient:
    family_name: str | None = None
    given_name: str | None = None
    middle_name: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    idents: list[Ident] = field(default_factory=list)

    @property
    def national_id(self) -> Ident | None:
        """The official id: fødselsnummer, D-nummer or felles hjelpenummer (H-nummer last)."""
        for wanted in ("FNR", "DNR", "FHN", "HNR"):
            for i in self.idents:
                if i.type == wanted and i.id.strip():
                    return i
        return None

    @property
    def has_name(self) -> bool:
        return bool((self.family_name or "").strip() or (self.given_name or "").strip())

    def __repr__(self) -> str:
        return "Patient(***)"


@dataclass
class Note:
    """A Dialogmelding Notat."""

    path: Where
    tema_kodet: Code | None = None
    tema: str | None = None
    text: str = ""
    merknad: str | None = None
    date: str | None = None

    def __repr__(self) -> str:
        return f"Note({self.path})"


@dataclass
class Request:
    """A Dialogmelding Foresporsel."""

    path: Where
    type: Code | None = None
    subject: str | None = None
    text: str = ""
    reason: str | None = None

    def __repr__(self) -> str:
        return f"Request({self.path})"


@dataclass
class RelatedRole:
    """A RollerRelatertNotat: a person (often the patient's GP) related to a note or request."""

    path: Where
    role_note: Code | None = None
    role_to_patient: Code | None = None
    person: PartyLevel | None = None
    unit: Party | None = None
    """TilknyttetEnhet/Kontaktenhet (Dialogmelding 1.1): the unit the person belongs to."""


@dataclass
class DialogPayload:
    version: str
    case_type: Code | None = None
    notes: list[Note] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    roles: list[RelatedRole] = field(default_factory=list)


@dataclass
class Comment:
    """An Epikrise Event/Comment: a heading (8311) and free text."""

    path: Where
    heading: Code | None = None
    text: str = ""

    def __repr__(self) -> str:
        return f"Comment({self.path})"


@dataclass
class Diagnosis:
    path: Where
    code: Code
    kind: str | None = None
    """8233: H main diagnosis, B secondary; ``referral`` for ServReq/Diagnosis."""
    date: str | None = None
    """The diagnosis entry's own date (InfItem StartDateTime or OrgDate) when given."""

    def __repr__(self) -> str:
        return f"Diagnosis({self.path})"


@dataclass
class EpikrisePayload:
    version: str
    msg_descr: str | None = None
    serv_type: Code | None = None
    status: Code | None = None
    issue_date: str | None = None
    comments: list[Comment] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    services: list[tuple[Where, Code]] = field(default_factory=list)
    """(path, code) of each Event/Service/ServId: the service described."""
    gp_relations: list[Party] = field(default_factory=list)
    """Patient/PatRelHCP, with the relation code (FLE = fastlege) as the Party's role."""
    requester: Party | None = None
    copy_dest: list[Party] = field(default_factory=list)
    serv_provider: Party | None = None


@dataclass
class AppRecPayload:
    version: str
    status: Code | None = None
    errors: list[Code] = field(default_factory=list)
    original_msg_type: str | None = None
    original_msg_id: str | None = None
    original_issue_date: str | None = None


Payload = DialogPayload | EpikrisePayload | AppRecPayload


@dataclass
class Attachment:
    """A document after the first in MsgHead, or an Epikrise RefDoc."""

    path: Where
    mime_type: str | None
    size: int | None
    """Decoded size in bytes when the attachment is inline, else None."""
    description: str | None = None
    inline: bool = False

    def __repr__(self) -> str:
        return f"Attachment({self.mime_type}, {self.size})"


@dataclass
class Message:
    """A received KITH message, whatever its standard."""

    standard: Standard
    root: str
    """Local name of the KITH root: MsgHead, Message (Epikrise) or AppRec."""
    msg_type: Code | None = None
    msg_id: str | None = None
    gen_date: str | None = None
    conversation_parent: str | None = None
    conversation_ref: str | None = None
    sender: Party | None = None
    receiver: Party | None = None
    other_receivers: list[Party] = field(default_factory=list)
    patient: Patient | None = None
    patient_count: int = 0
    payload_namespace: str | None = None
    _payload: Payload | None = field(default=None, repr=False)
    _load_payload: Callable[[], Payload | None] | None = field(default=None, repr=False)
    attachments: list[Attachment] = field(default_factory=list)
    document_descriptions: list[tuple[Where, str]] = field(default_factory=list)
    """(path, text) of MsgHead Document ContentDescription / RefDoc Description: where some
    senders put the letter's title."""

    @property
    def payload(self) -> Payload | None:
        """The payload's content, read on first use: validating a message needs only its
        header, and reading notes and clinical text is most of the cost of reading."""
        if self._load_payload is not None:
            loader, self._load_payload = self._load_payload, None
            self._payload = loader()
        return self._payload

    @payload.setter
    def payload(self, value: Payload | None) -> None:
        self._payload, self._load_payload = value, None

    def defer_payload(self, loader: Callable[[], Payload | None]) -> None:
        self._load_payload = loader

    @property
    def gen_datetime(self) -> datetime | None:
        return parse_kith_datetime(self.gen_date)

    @property
    def is_apprec(self) -> bool:
        return self.root == "AppRec"

    def __repr__(self) -> str:
        return f"Message({self.standard}, type={self.msg_type and self.msg_type.value}, id={self.msg_id})"


def parse_kith_datetime(value: str | None) -> datetime | None:
    """KITH time stamps are xs:dateTime or xs:date, with or without fractions and offsets."""
    if not value:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        d = date.fromisoformat(text[:10])
    except ValueError:
        return None
    return datetime(d.year, d.month, d.day)
