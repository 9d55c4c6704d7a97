"""Rules the schemas cannot express: code lists, identifiers, the AppRec's own rules, and
whether the patient is identified well enough to be received.

Only what the AppRec rules make a reason for rejection is an error with an AppRec code
(E10 message id, E36 patient); the rest are warnings an operator can pass on to the sender.
"""

from __future__ import annotations

import re

from pfhjem_msg.kith import codes
from pfhjem_msg.kith.issues import Issue, code_text, error, warning
from pfhjem_msg.kith.model import AppRecPayload, Message, Party

UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MIG_VERSIONS = {
    "apprec-1.0": "1.0 2004-11-21",
    "apprec-1.1": "v1.1 2012-02-15",
    "epikrise-1.2": "v1.2 2012-02-15",
}
_K1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_K2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def national_id_checksum_ok(value: str) -> bool:
    """Mod-11 control digits of a fødselsnummer, D-nummer or H-nummer (11 digits)."""
    if len(value) != 11 or not value.isascii() or not value.isdigit():
        return False
    digits = value.encode()
    for weights, position in ((_K1, 9), (_K2, 10)):
        rest = 11 - sum(w * (d - 48) for w, d in zip(weights, digits, strict=False)) % 11
        control = 0 if rest == 11 else rest
        if control == 10 or control != digits[position] - 48:
            return False
    return True


def check(msg: Message, mig_version: str | None = None) -> list[Issue]:
    issues: list[Issue] = []
    if not msg.msg_id:
        issues.append(error("MSGID_MISSING", "the message has no MsgId", apprec_code="E10"))
    elif not UUID.match(msg.msg_id):
        issues.append(error("MSGID_NOT_UUID", "MsgId is not a UUID", apprec_code="E10"))
    if msg.msg_type is None:
        if not msg.is_apprec:
            issues.append(warning("MSG_TYPE_MISSING", "the message names no message type (8279)"))
    elif not codes.is_known_message_type(msg.msg_type.value):
        issues.append(
            warning(
                "MSG_TYPE_UNKNOWN",
                f"message type {code_text(msg.msg_type.value)} is not one this product knows",
            )
        )
    expected_mig = MIG_VERSIONS.get(msg.standard)
    if expected_mig and mig_version is not None and mig_version.strip() != expected_mig:
        issues.append(
            warning("MIG_VERSION", f"MIGversion is not {expected_mig!r}, the version this standard requires")
        )
    if msg.gen_date and msg.gen_datetime is None:
        issues.append(warning("GEN_DATE_UNREADABLE", "GenDate is not a date and time"))
    for party, label in ((msg.sender, "sender"), (msg.receiver, "receiver")):
        issues.extend(_party(party, label))
    if msg.is_apprec and isinstance(msg.payload, AppRecPayload):
        issues.extend(_apprec(msg.payload))
    elif msg.standard.startswith(("dialogmelding", "epikrise")):
        issues.extend(_patient(msg))
    return issues


def _party(party: Party | None, label: str) -> list[Issue]:
    if party is None:
        return [warning(f"{label.upper()}_MISSING", f"the {label} cannot be read")]
    out = []
    if not party.her_ids:
        out.append(warning(f"{label.upper()}_NO_HER", f"the {label} has no HER-id at any level"))
    for level in party.levels:
        her = level.her_id
        if her is not None and not her.isdigit():
            out.append(
                warning("HER_ID_NOT_NUMERIC", f"a {label} HER-id is not a number", path=str(level.path))
            )
    return out


def _patient(msg: Message) -> list[Issue]:
    if msg.patient_count == 0 or msg.patient is None:
        return [error("PATIENT_MISSING", "the message names no patient", apprec_code="E36")]
    out = []
    if msg.patient_count > 1:
        out.append(error("PATIENT_SEVERAL", "the message names more than one patient", apprec_code="E36"))
    p = msg.patient
    national = p.national_id
    identified = p.has_name and (national is not None or (bool(p.birth_date) and bool(p.sex)))
    if not identified:
        out.append(
            error(
                "PATIENT_INSUFFICIENT",
                "the patient is not identified by name and national id, nor by name, birth date and sex",
                apprec_code="E36",
            )
        )
    if national is not None and national.type in ("FNR", "DNR") and not national_id_checksum_ok(national.id):
        out.append(warning("PATIENT_ID_CHECKSUM", f"the patient's {national.type} fails its control digits"))
    return out


def _apprec(payload: AppRecPayload) -> list[Issue]:
    out = []
    status = payload.status.value if payload.status else None
    if status not in codes.APPREC_STATUS:
        out.append(
            error("APPREC_STATUS_UNKNOWN", f"AppRec status {code_text(status)} is not in code system 8258")
        )
    elif status == "1" and payload.errors:
        out.append(error("APPREC_STATUS_ERRORS", "an AppRec with status 1 (OK) must carry no Error"))
    elif status in ("2", "3") and not payload.errors:
        out.append(error("APPREC_STATUS_ERRORS", f"an AppRec with status {status} must carry an Error"))
    for e in payload.errors:
        in_8221 = e.system in (None, codes.APPREC_ERROR_SYSTEM)
        if in_8221 and e.value not in codes.APPREC_ERRORS:
            out.append(
                warning(
                    "APPREC_ERROR_UNKNOWN", f"AppRec error {code_text(e.value)} is not in code system 8221"
                )
            )
    if not payload.original_msg_id:
        out.append(error("APPREC_NO_ORIGINAL", "the AppRec does not name the message it answers"))
    return out
