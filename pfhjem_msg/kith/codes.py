"""Code lists the schemas cannot check (an XSD accepts ``<Status V="73"/>``).

Values from the 2018 Volven snapshot and later additions, as summarised in the KITH facts
sheet. Lists change: an unknown message type is a warning, not a rejection.
"""

from __future__ import annotations

OID_PREFIX = "2.16.578.1.12.4.1.1."
PERSON_ID_SYSTEM = OID_PREFIX + "8116"
ORGANISATION_ID_SYSTEM = OID_PREFIX + "9051"
APPREC_ERROR_SYSTEM = OID_PREFIX + "8221"
# 8268 is the older combined id-type list; HER appears with either 8116 or 9051 in practice.
ID_SYSTEMS_ACCEPTED = frozenset({PERSON_ID_SYSTEM, ORGANISATION_ID_SYSTEM, OID_PREFIX + "8268"})

# 8116 ID-type for personer
PERSON_ID_TYPES = frozenset(
    {"FNR", "DNR", "HNR", "FHN", "HPR", "HER", "DUF", "PNR", "SEF", "DKF", "SSN", "FPN", "UID", "XXX"}
)
# 9051 ID-typer for organisatoriske enheter
ORGANISATION_ID_TYPES = frozenset(
    {"HER", "ENH", "AVD", "LAV", "LIN", "LOK", "NPR", "RSH", "SYS", "APO", "AKO"}
)
ALL_ID_TYPES = PERSON_ID_TYPES | ORGANISATION_ID_TYPES
NATIONAL_ID_TYPES = ("FNR", "DNR", "FHN")

# 8279 Meldingens funksjon: the types this product meets. Others are valid KITH types too.
MESSAGE_TYPES = {
    "DIALOG_FORESPORSEL": "Forespørsel",
    "DIALOG_SVAR": "Svar på forespørsel",
    "DIALOG_NOTAT": "Notat",
    "DIALOG_AVVIK": "Tilbakemelding om feil i mottatt melding",
    "DIALOG_HELSEFAGLIG": "Helsefaglig dialog",
    "DIALOG_STATUS_HENVISNING": "Status på henvisning",
    "EPIKRISE": "Epikrise",
    "APPREC": "Applikasjonskvittering",
}
MESSAGE_TYPE_PREFIXES = ("DIALOG_INNBYGGER_",)

# 8258 Status for mottak av melding
APPREC_STATUS = {"1": "OK", "2": "Avvist", "3": "OK, feil i delmelding"}

# 8221 Feilmeldinger for applikasjonskvittering - generelle
APPREC_ERRORS = {
    "T01": "Ikke XML / ikke 'well formed' / uleselig",
    "T02": "XML validerer ikke",
    "T10": "Støtter ikke meldingsformatet",
    "T99": "Annen feil på format",
    "S01": "Feil på signatur",
    "S02": "Ugyldig sertifikat",
    "S03": "Tilbaketrukket sertifikat",
    "S99": "Annen feil på signatur eller sertifikat",
    "E10": "Ugyldig meldingsidentifikator",
    "E20": "Lege finnes ikke",
    "E21": "Mottaker finnes ikke",
    "E30": "Pasientens fødselsnummer mangler",
    "E31": "Pasientens fødselsnummer er feil",
    "E32": "Pasientens navn mangler",
    "E33": "Pasientens etternavn mangler",
    "E34": "Pasientens fornavn mangler",
    "E35": "Pasienten finnes ikke i mottakersystemet",
    "E36": "Pasientopplysninger er utilstrekkelige",
    "E40": "Mottaker er ikke korrekt",
    "E53": "Fnr/D-nr finnes ikke i Folkeregisteret",
    "E54": "Pasientens fnr er ikke registrert i mottakersystemet",
    "X99": "Annen feil",
}

# 8112 Type mottaker
ROLE_PRIMARY = ("PRIM", "Primærmottaker")
ROLE_COPY = ("COP", "Kopimottaker")
ROLE_SENDER = ("AVS", "Avsender")


def is_known_message_type(value: str) -> bool:
    return value in MESSAGE_TYPES or value.startswith(MESSAGE_TYPE_PREFIXES)
