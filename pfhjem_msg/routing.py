"""Where a received message must go, and why.

The receiver's HER-ids (at any level; for an Epikrise the Requester, then the CopyDests)
pick one configured municipality. A marked message goes to that municipality's case unit and
to the patient's GP; an unmarked one to its default destination only. Every decision carries
a reason an operator can read, and never any patient data.

The GP, in order: named in the message itself (Epikrise ``PatRelHCP`` with relation FLE;
MsgHead ``OtherReceiver`` who is the patient's fastlege; Dialogmelding
``RollerRelatertNotat`` with RoleToPatient 6), then the operator's GP registry by the
patient's national id, then none. No GP is a normal outcome: the case unit still gets the
message and the decision says so. A GP who already received the original (as primary or copy
receiver) gets no second copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pfhjem_msg.config import Destination, Municipality, Settings
from pfhjem_msg.gpregistry import GP, GPRegistry
from pfhjem_msg.kith.model import DialogPayload, EpikrisePayload, Message, Party, PartyLevel
from pfhjem_msg.lifecycle import DestinationTransport, describe_destination
from pfhjem_msg.pathway import Detection

Role = Literal["case_unit", "gp", "default"]
Action = Literal["deliver", "hold", "reject"]
FASTLEGE_ROLE = "6"  # 9034 RoleToPatient: fastlege
FASTLEGE_RELATION = "FLE"  # 8254: fastlege


@dataclass(frozen=True)
class Recipient:
    role: Role
    her_id: str | None
    name: str
    transport: DestinationTransport
    reason: str
    office_her_id: str | None = None
    office_name: str | None = None
    target: str | None = None
    """The directory or e-mail address, for ``dir`` and ``smtp``."""

    @property
    def destination(self) -> str:
        return describe_destination(self.transport, self.target)

    def as_dict(self) -> dict[str, object]:
        return {
            "role": self.role,
            "her_id": self.her_id,
            "name": self.name,
            "transport": self.destination,
            "reason": self.reason,
        }


@dataclass
class RoutingDecision:
    action: Action
    reason: str
    municipality: Municipality | None = None
    recipients: list[Recipient] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Facts an operator should see (no GP found, the registry disagreeing with itself, …)."""


@dataclass(frozen=True)
class GPCandidate:
    her_id: str | None
    name: str
    office_her_id: str | None
    office_name: str | None
    source: str


def pick_municipality(msg: Message, municipalities: list[Municipality]) -> tuple[Municipality | None, str]:
    """The municipality the message is addressed to, and on which HER-id."""
    parties: list[tuple[str, Party | None]] = [("receiver", msg.receiver)]
    parties += [("copy receiver", p) for p in msg.other_receivers]
    for label, party in parties:
        if party is None:
            continue
        for her in reversed(party.her_ids):  # the lowest level is the communication party
            for m in municipalities:
                if her in m.her_ids:
                    return m, f"{label} HER-id {her} is {m.name}'s"
    return None, "no receiver HER-id belongs to a configured municipality"


def _gp_from_level(org: PartyLevel | None, person: PartyLevel, source: str) -> GPCandidate:
    return GPCandidate(
        person.her_id,
        person.name or "fastlege",
        org.her_id if org else None,
        org.name if org else None,
        source,
    )


def gp_from_message(msg: Message) -> GPCandidate | None:
    payload = msg.payload
    if isinstance(payload, EpikrisePayload):
        for rel in payload.gp_relations:
            if rel.role is not None and rel.role.value == FASTLEGE_RELATION and rel.levels:
                orgs = [lv for lv in rel.levels if lv.kind in ("organisation", "department")]
                persons = [lv for lv in rel.levels if lv.kind == "professional"]
                person = persons[0] if persons else rel.levels[-1]
                return _gp_from_level(
                    orgs[0] if orgs else None, person, "the Epikrise names the fastlege (PatRelHCP FLE)"
                )
    for other in msg.other_receivers:
        for i, level in enumerate(other.levels):
            if (
                level.kind == "professional"
                and level.role_to_patient
                and level.role_to_patient.value == FASTLEGE_ROLE
            ):
                org = other.levels[i - 1] if i > 0 else None
                return _gp_from_level(org, level, "a copy receiver is the patient's fastlege")
    if isinstance(payload, DialogPayload):
        for role in payload.roles:
            if (
                role.role_to_patient
                and role.role_to_patient.value == FASTLEGE_ROLE
                and role.person is not None
            ):
                org = role.unit.levels[-1] if role.unit and role.unit.levels else None
                return _gp_from_level(org, role.person, "the note names the fastlege (RoleToPatient 6)")
    return None


def find_gp(msg: Message, registry: GPRegistry | None) -> tuple[GPCandidate | None, list[str]]:
    """The patient's GP with both HER-ids, or None, and notes on how the search went."""
    notes: list[str] = []
    found = gp_from_message(msg)
    if found is not None and found.her_id and found.office_her_id:
        return found, notes
    if registry is not None:
        if found is not None and found.her_id:
            gp = registry.by_her(found.her_id)
            if gp is not None:
                return _from_registry(gp, found.source + "; the office from the GP registry"), notes
        national = msg.patient.national_id if msg.patient else None
        if national is None:
            notes.append("the patient has no national id, so the GP registry could not be asked")
        else:
            answer = registry.lookup(national.id)
            if answer.gp is not None:
                return _from_registry(answer.gp, "the GP registry lists the patient's fastlege"), notes
            if answer.conflict_lines:
                lines = ", ".join(map(str, answer.conflict_lines))
                notes.append(
                    f"no GP copy from the GP registry: its lines {lines} give the patient different "
                    "fastleger; fix the file, then, if the copy is still wanted, `pfhjem-msg messages "
                    "replay ID --from-start --force-duplicate` (the case unit gets its copy again too)"
                )
            else:
                notes.append("the GP registry has no fastlege for the patient")
    else:
        notes.append("no GP registry is configured")
    if found is not None:
        notes.append("the message names a fastlege without the HER-ids a copy needs")
    return None, notes


def _from_registry(gp: GP, source: str) -> GPCandidate:
    return GPCandidate(gp.her_id, gp.name, gp.office_her_id, gp.office_name, source)


def _received_original(msg: Message, gp: GPCandidate) -> str | None:
    for label, party in [("primary receiver", msg.receiver)] + [
        ("copy receiver", p) for p in msg.other_receivers
    ]:
        if party is not None and gp.her_id and gp.her_id in party.her_ids:
            return label
    return None


def _recipient(role: Role, dest: Destination, reason: str) -> Recipient:
    return Recipient(role, dest.her_id, dest.name, dest.transport, reason, target=dest.target)


def route(
    msg: Message, detection: Detection, settings: Settings, registry: GPRegistry | None
) -> RoutingDecision:
    if msg.is_apprec:
        return RoutingDecision("deliver", "an AppRec is matched to what we sent; it is not routed")
    municipality, why = pick_municipality(msg, settings.municipalities)
    if municipality is None:
        if settings.apprec.unknown_receiver == "hold":
            return RoutingDecision("hold", f"{why}; held for an operator (policy: hold)")
        return RoutingDecision("reject", f"{why}; answered with AppRec E21 (policy: apprec_e21)")
    if msg.patient_count > 1:
        return RoutingDecision(
            "hold", "the message names more than one patient; an operator must decide", municipality
        )
    decision = RoutingDecision("deliver", why, municipality)
    if not detection.marked:
        reason = f"not marked ({detection.not_marked_reason}); to the default destination"
        decision.recipients.append(_recipient("default", municipality.default, reason))
        return decision
    rules = ", ".join(sorted({m.rule for m in detection.matches}))
    decision.recipients.append(
        _recipient("case_unit", municipality.case_unit, f"marked Pakkeforløp hjem (rule {rules}): one way in")
    )
    gp, notes = find_gp(msg, registry)
    decision.notes.extend(notes)  # the registry's own problems are logged once per load, not here
    if gp is None:
        if not any(n.startswith("no GP copy") for n in notes):  # a registry conflict said it already
            decision.notes.append("no GP copy: the patient has no known fastlege; the case unit follows up")
        return decision
    already = _received_original(msg, gp)
    if already:
        decision.notes.append(
            f"no GP copy: the fastlege (HER-id {gp.her_id}) already received it as {already}"
        )
        return decision
    decision.recipients.append(
        Recipient("gp", gp.her_id, gp.name, "hub", gp.source, gp.office_her_id, gp.office_name)
    )
    return decision
