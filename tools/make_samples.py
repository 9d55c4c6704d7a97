"""Write the sample messages in ``samples/`` and their table in ``samples/README.md``.

Every person, institution, HER-id and national id here is invented; national ids are in the
synthetic range (month + 80) with correct control digits. The table states what the product
must do with each file; ``tests/test_samples.py`` holds the product to it. Run again after
changing a sample: ``python tools/make_samples.py``.
"""

from __future__ import annotations

import base64
import datetime as dt
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "samples"

MH = "http://www.kith.no/xmlstds/msghead/2006-05-24"
DLG10 = "http://www.kith.no/xmlstds/dialog/2006-10-11"
DLG11 = "http://www.kith.no/xmlstds/dialog/2013-01-23"
EPI12 = "http://www.kith.no/xmlstds/epikrise/2012-02-15"
EPI11 = "http://www.kith.no/xmlstds/epikrise/2006-09-23"
FK1 = "http://www.kith.no/xmlstds/felleskomponent1"
B64 = "http://www.kith.no/xmlstds/base64container"
AR10 = "http://www.kith.no/xmlstds/apprec/2004-11-21"
AR11 = "http://www.kith.no/xmlstds/apprec/2012-02-15"
S9051 = "2.16.578.1.12.4.1.1.9051"
S8116 = "2.16.578.1.12.4.1.1.8116"

PHRASE = "Pakkeforløp hjem for pasienter med kreft"


def synthetic_fnr(day: int, month: int, year: int, individual: int) -> str:
    """A fødselsnummer in the synthetic test range (month + 80) with valid control digits."""
    k1w, k2w = (3, 7, 6, 1, 8, 9, 4, 5, 2), (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
    for ind in range(individual, individual + 50):
        base = f"{day:02d}{month + 80:02d}{year % 100:02d}{ind:03d}"
        digits = [int(c) for c in base]
        k1 = 11 - sum(w * d for w, d in zip(k1w, digits, strict=True)) % 11
        k1 = 0 if k1 == 11 else k1
        if k1 == 10:
            continue
        digits.append(k1)
        k2 = 11 - sum(w * d for w, d in zip(k2w, digits, strict=True)) % 11
        k2 = 0 if k2 == 11 else k2
        if k2 == 10:
            continue
        return base + str(k1) + str(k2)
    raise ValueError("no valid control digits in range")


@dataclass
class Person:
    given: str
    family: str
    fnr: str
    birth: str
    sex: str


PATIENTS = [
    Person("Solveig", "Prøvestad", synthetic_fnr(14, 3, 1958, 412), "1958-03-14", "2"),
    Person("Arne", "Testmoen", synthetic_fnr(2, 11, 1949, 236), "1949-11-02", "1"),
    Person("Liv", "Eksempeldal", synthetic_fnr(27, 6, 1971, 518), "1971-06-27", "2"),
    Person("Håkon", "Fiktivsen", synthetic_fnr(9, 1, 1985, 145), "1985-01-09", "1"),
    Person("Kari", "Nordprøve", synthetic_fnr(30, 9, 1966, 327), "1966-09-30", "2"),
]

# Invented communication parties (HER-ids in an unused range).
HOSPITAL_HP = ("Helse Vestfjord HF", "8100001", "Kreftavdelingen", "8100020")  # on Helseplattformen
HOSPITAL_DL = ("Sykehuset Innfjord HF", "8200001", "Medisinsk klinikk", "8200030")  # on Doculive
MUNI_A = ("Fjordvik kommune", "8300001", "Tildelingskontoret", "8300010")
MUNI_B = ("Åsli kommune", "8400001", "Tjenestekontoret", "8400010")
GP_OFFICE = ("Fjordvik legesenter", "8500001")
GP = ("Anne", "Allmennsen", "8500011", "9912345")  # given, family, HER-id, HPR


def org(name: str, her: str, sub: tuple[str, str] | None = None, hcp: str = "") -> str:
    inner = (
        f"<Organisation><OrganisationName>{sub[0]}</OrganisationName>"
        f'<Ident><Id>{sub[1]}</Id><TypeId V="HER" DN="HER-id" S="{S9051}"/></Ident></Organisation>'
        if sub
        else ""
    )
    return (
        f"<Organisation><OrganisationName>{name}</OrganisationName>"
        f'<Ident><Id>{her}</Id><TypeId V="HER" DN="HER-id" S="{S9051}"/></Ident>'
        f"{inner}{hcp}</Organisation>"
    )


def gp_hcp() -> str:
    return (
        '<HealthcareProfessional><TypeHealthcareProfessional V="LE" DN="Lege"/>'
        '<RoleToPatient V="6" S="2.16.578.1.12.4.1.1.9034" DN="Fastlege"/>'
        f"<FamilyName>{GP[1]}</FamilyName><GivenName>{GP[0]}</GivenName>"
        f'<Ident><Id>{GP[2]}</Id><TypeId V="HER" DN="HER-id" S="{S8116}"/></Ident>'
        f'<Ident><Id>{GP[3]}</Id><TypeId V="HPR" DN="HPR-nummer" S="{S8116}"/></Ident>'
        "</HealthcareProfessional>"
    )


def patient_xml(p: Person, with_id: bool = True, with_birth: bool = True) -> str:
    ident = (
        f'<Ident><Id>{p.fnr}</Id><TypeId V="FNR" DN="Fødselsnummer" S="{S8116}"/></Ident>' if with_id else ""
    )
    birth = f'<DateOfBirth>{p.birth}</DateOfBirth><Sex V="{p.sex}"/>' if with_birth else ""
    return f"<Patient><FamilyName>{p.family}</FamilyName><GivenName>{p.given}</GivenName>{birth}{ident}</Patient>"


def msghead(
    msg_type: tuple[str, str],
    msg_id: str,
    payload: str,
    *,
    patient: str,
    sender: str,
    receiver: str,
    other: str = "",
    extra_docs: str = "",
    conversation: str = "",
    gen: str = "2026-10-05T09:14:22",
    root_prefix: str = "",
    mig: str = "v1.2 2006-05-24",
    swap_parties: bool = False,
) -> str:
    p = f"{root_prefix}:" if root_prefix else ""
    xmlns = f'xmlns:{root_prefix}="{MH}"' if root_prefix else f'xmlns="{MH}"'
    body = (
        f'<MsgInfo><Type V="{msg_type[0]}" DN="{msg_type[1]}"/><MIGversion>{mig}</MIGversion>'
        f"<GenDate>{gen}</GenDate><MsgId>{msg_id}</MsgId>{conversation}"
        + (
            f"<Receiver>{receiver}</Receiver><Sender>{sender}</Sender>"
            if swap_parties
            else f"<Sender>{sender}</Sender><Receiver>{receiver}</Receiver>"
        )
        + f"{other}{patient}</MsgInfo>"
        f'<Document><RefDoc><IssueDate V="{gen}"/><MsgType V="XML" DN="XML-instans"/>'
        f"<MimeType>text/xml</MimeType><Content>{payload}</Content></RefDoc></Document>{extra_docs}"
    )
    if root_prefix:
        # Prefix every MsgHead element; the payload keeps its own default namespace.
        import re

        head, _, tail = body.partition("<Content>")
        content, _, rest = tail.partition("</Content>")

        def prefix(text: str) -> str:
            return re.sub(r"<(/?)([A-Z][A-Za-z]*)", rf"<\1{root_prefix}:\2", text)

        body = prefix(head) + f"<{p}Content>" + content + f"</{p}Content>" + prefix(rest)
    return pretty(f'<?xml version="1.0" encoding="UTF-8"?>\n<{p}MsgHead {xmlns}>{body}</{p}MsgHead>\n')


def pretty(xml: str) -> str:
    """Indent like the messages real systems send; text inside elements is left as it is."""
    from lxml import etree

    head, _, rest = xml.partition("\n") if xml.startswith("<?xml") else ("", "", xml)
    root = etree.fromstring(rest.encode())
    etree.indent(root, space="  ")
    body = str(etree.tostring(root, encoding="unicode"))
    return (head + "\n" if head else "") + body + "\n"


def hospital_hp() -> str:
    return org(HOSPITAL_HP[0], HOSPITAL_HP[1], (HOSPITAL_HP[2], HOSPITAL_HP[3]))


def muni(m: tuple[str, str, str, str] = MUNI_A) -> str:
    return org(m[0], m[1], (m[2], m[3]))


def gp_other_receiver() -> str:
    return (
        f'<OtherReceiver><RoleReceiver V="COP" DN="Kopimottaker"/>'
        f"{org(GP_OFFICE[0], GP_OFFICE[1], hcp=gp_hcp())}</OtherReceiver>"
    )


def note11(tema: str, text: str, tema_dn: str = "Henvendelse om pasient", roles: str = "") -> str:
    return (
        f'<Dialogmelding xmlns="{DLG11}" xmlns:fk1="{FK1}"><Notat>'
        f'<TemaKodet V="6" S="2.16.578.1.12.4.1.1.7322" DN="{tema_dn}"/>'
        f"<Tema>{tema}</Tema><TekstNotatInnhold>{text}</TekstNotatInnhold>"
        f"<DatoNotat>2026-10-05</DatoNotat>{roles}</Notat></Dialogmelding>"
    )


def gp_role11() -> str:
    return (
        '<RollerRelatertNotat><RoleToPatient V="6" S="2.16.578.1.12.4.1.1.9034" DN="Fastlege"/>'
        "<HealthcareProfessional>"
        f"<FamilyName>{GP[1]}</FamilyName><GivenName>{GP[0]}</GivenName>"
        f'<Ident><fk1:Id>{GP[3]}</fk1:Id><fk1:TypeId V="HPR" DN="HPR-nummer" S="{S8116}"/></Ident>'
        f'<Ident><fk1:Id>{GP[2]}</fk1:Id><fk1:TypeId V="HER" DN="HER-id" S="{S8116}"/></Ident>'
        "</HealthcareProfessional></RollerRelatertNotat>"
    )


def xhtml(*paragraphs: str) -> str:
    return (
        '<div xmlns="http://www.w3.org/1999/xhtml">' + "".join(f"<p>{p}</p>" for p in paragraphs) + "</div>"
    )


def pdf_document(description: str = "Kartleggingsskjema") -> str:
    pdf = (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Count 0>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )
    data = base64.b64encode(pdf).decode()
    return (
        '<Document><DocumentConnection V="V" DN="Vedlegg"/><RefDoc><MsgType V="A" DN="Vedlegg"/>'
        f"<MimeType>application/pdf</MimeType><Description>{description}</Description>"
        f'<Content><Base64Container xmlns="{B64}">{data}</Base64Container></Content></RefDoc></Document>'
    )


KARTLEGGING = [
    "Behovskartlegging er gjennomført etter at pasienten ble informert om kreftdiagnosen.",
    "Pasienten ønsker kontakt med kommunens kreftkoordinator. Viktig for pasienten: familie og jobb.",
    "Diagnosedato: 12.09.2026.",
]


def dialog11(
    msg_id: str,
    tema: str,
    text: str,
    *,
    patient: Person = PATIENTS[0],
    roles: str = "",
    other: str = "",
    extra_docs: str = "",
    tema_dn: str = "Henvendelse om pasient",
    receiver: str | None = None,
    root_prefix: str = "",
) -> str:
    return msghead(
        ("DIALOG_HELSEFAGLIG", "Helsefaglig dialog"),
        msg_id,
        note11(tema, text, tema_dn, roles),
        patient=patient_xml(patient),
        sender=hospital_hp(),
        receiver=receiver or muni(),
        other=other,
        extra_docs=extra_docs,
        root_prefix=root_prefix,
    )


def dialog10(msg_id: str, kind: str, payload: str, patient: Person, conversation: str = "") -> str:
    names = {
        "DIALOG_NOTAT": "Notat",
        "DIALOG_FORESPORSEL": "Forespørsel",
        "DIALOG_SVAR": "Svar på forespørsel",
    }
    return msghead(
        (kind, names[kind]),
        msg_id,
        f'<Dialogmelding xmlns="{DLG10}" xmlns:fk1="{FK1}">{payload}</Dialogmelding>',
        patient=patient_xml(patient),
        sender=hospital_hp(),
        receiver=muni(MUNI_B),
        conversation=conversation,
    )


def notat10(tema: str, text: str) -> str:
    author = (
        '<RollerRelatertNotat><RolleNotat V="1" S="2.16.578.1.12.4.1.1.9057" DN="Forfatter"/>'
        "<HealthcareProfessional><FamilyName>Sykepleiersen</FamilyName><GivenName>Berit</GivenName>"
        f'<Ident><fk1:Id>9876543</fk1:Id><fk1:TypeId V="HPR" DN="HPR-nummer" S="{S8116}"/></Ident>'
        "</HealthcareProfessional></RollerRelatertNotat>"
    )
    return (
        f'<Notat><TemaKodet V="1" S="2.16.578.1.12.4.1.1.7321" DN="Notat om pasient"/><Tema>{tema}</Tema>'
        f"<TekstNotatInnhold>{text}</TekstNotatInnhold>{author}</Notat>"
    )


def foresporsel10(text: str, reason: str = "") -> str:
    why = f"<Begrunnelse>{reason}</Begrunnelse>" if reason else ""
    return (
        '<Foresporsel><TypeForesp V="1" S="2.16.578.1.12.4.1.1.8331" DN="Generell forespørsel"/>'
        f"<Sporsmal>{text}</Sporsmal>{why}</Foresporsel>"
    )


def inst(
    name: str, her: str, dept: tuple[str, str] | None = None, person: tuple[str, str] | None = None
) -> str:
    d = f'<Dept><Name>{dept[0]}</Name><Id>{dept[1]}</Id><TypeId V="HER" DN="HER-id"/></Dept>' if dept else ""
    p = (
        f'<HCPerson><Name>{person[0]}</Name><Id>{person[1]}</Id><TypeId V="HER" DN="HER-id"/></HCPerson>'
        if person
        else ""
    )
    return f'<HCP><Inst><Name>{name}</Name><Id>{her}</Id><TypeId V="HER" DN="HER-id"/>{d}{p}</Inst></HCP>'


def epikrise(
    msg_id: str,
    *,
    ns: str = EPI12,
    msg_descr: str = "Epikrise",
    comments: list[tuple[str, str, str]] | None = None,
    patient: Person = PATIENTS[1],
    gp_relation: bool = False,
    copy_gp: bool = False,
    diagnosis: tuple[str, str, str] | None = (
        "C34.1",
        "Ondartet svulst i overlapp, bronkie eller lunge",
        "2026-09-12",
    ),
    declaration: bool = True,
    mig: str = "v1.2 2012-02-15",
) -> str:
    comments = comments if comments is not None else [("FO", "Forløp og behandling", xhtml(*KARTLEGGING[:2]))]
    status = '<Status V="APR" DN="Endelig"/>' if ns == EPI12 else ""
    fle = (
        '<PatRelHCP><Relation V="FLE" DN="Fastlege"/><HCP><Inst>'
        f'<Name>{GP_OFFICE[0]}</Name><Id>{GP_OFFICE[1]}</Id><TypeId V="HER" DN="HER-id"/>'
        f'<HCPerson><Name>{GP[0]} {GP[1]}</Name><Id>{GP[2]}</Id><TypeId V="HER" DN="HER-id"/></HCPerson>'
        "</Inst></HCP></PatRelHCP>"
        if gp_relation
        else ""
    )
    copy = (
        f"<CopyDest>{inst(GP_OFFICE[0], GP_OFFICE[1], person=(f'{GP[0]} {GP[1]}', GP[2]))}</CopyDest>"
        if copy_gp
        else ""
    )
    diag = ""
    if diagnosis:
        diag = (
            "<InfItem><Observation><CodedDescr>"
            f'<Concept V="{diagnosis[0]}" S="2.16.578.1.12.4.1.1.7110" DN="{diagnosis[1]}"/>'
            f'</CodedDescr></Observation><Type V="H" DN="Hoveddiagnose"/><StartDateTime V="{diagnosis[2]}"/></InfItem>'
        )
    comment_xml = "".join(
        f'<Comment><Heading V="{code}" DN="{dn}"/><TextResultValue>{body}</TextResultValue></Comment>'
        for code, dn, body in comments
    )
    event_id = "<Id>1</Id>" if ns == EPI11 else ""
    decl = '<?xml version="1.0" encoding="UTF-8"?>\n' if declaration else ""
    return pretty(
        f'{decl}<Message xmlns="{ns}"><Type V="EPIKRISE" DN="Epikrise"/><MIGversion>{mig}</MIGversion>'
        f'<GenDate V="2026-10-06T13:40:00"/><MsgId>{msg_id}</MsgId>{status}<ServRprt>'
        '<ServType V="N" DN="Ny"/><IssueDate V="2026-10-06T13:30:00"/><Status V="F" DN="Endelig rapport"/>'
        f"<MsgDescr>{msg_descr}</MsgDescr><ServProvId>{msg_id}</ServProvId>"
        f'<Event><ReportedEvent><StartDateTime V="2026-09-10T08:00:00"/><EndDateTime V="2026-10-06T12:00:00"/>'
        f'</ReportedEvent><ServType V="N" DN="Ny"/>{event_id}<Service><AdmCat V="3" DN="Poliklinisk"/></Service>'
        f"{diag}{comment_xml}</Event>"
        f'<Patient><Sex V="{patient.sex}"/><DateOfBirth V="{patient.birth}"/>'
        f"<Name>{patient.family}, {patient.given}</Name><OffId>{patient.fnr}</OffId>"
        f'<TypeOffId V="FNR" DN="Fødselsnummer"/>{fle}</Patient>'
        f'<ServProvider><Role V="SPR" DN="Tjenesteyter"/>'
        f"{inst(HOSPITAL_DL[0], HOSPITAL_DL[1], (HOSPITAL_DL[2], HOSPITAL_DL[3]), ('Lege Per Doktorsen', '8200099'))}"
        f"</ServProvider>{copy}"
        f'<Requester><Role V="REQ" DN="Rekvirent"/>{inst(MUNI_A[0], MUNI_A[1], (MUNI_A[2], MUNI_A[3]))}</Requester>'
        "</ServRprt></Message>\n"
    )


def apprec(version: str, msg_id: str, original_id: str, status: tuple[str, str], errors: str = "") -> str:
    ns = AR11 if version == "1.1" else AR10
    mig = "v1.1 2012-02-15" if version == "1.1" else "1.0 2004-11-21"
    return pretty(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<AppRec xmlns="{ns}"><MsgType V="APPREC" DN="Applikasjonskvittering"/>'
        f"<MIGversion>{mig}</MIGversion><GenDate>2026-10-07T10:00:00+02:00</GenDate><Id>{msg_id}</Id>"
        f'<Sender><Role V="PRIM" DN="Primærmottaker"/>{inst(GP_OFFICE[0], GP_OFFICE[1], person=(f"{GP[0]} {GP[1]}", GP[2]))}</Sender>'
        f'<Receiver><Role V="AVS" DN="Avsender"/>{inst(MUNI_A[0], MUNI_A[1], (MUNI_A[2], MUNI_A[3]))}</Receiver>'
        f'<Status V="{status[0]}" DN="{status[1]}"/>{errors}'
        '<OriginalMsgId><MsgType V="DIALOG_HELSEFAGLIG" DN="Helsefaglig dialog"/>'
        f"<IssueDate>2026-10-07T09:58:00</IssueDate><Id>{original_id}</Id></OriginalMsgId></AppRec>\n"
    )


@dataclass
class Sample:
    name: str
    what: str
    content: bytes
    standard: str
    valid: bool
    marked: bool
    apprec: str
    """'none', '1', or '2 CODE CODE' (what `apprec` must produce with default settings)."""
    codes: list[str] = field(default_factory=list)
    """Issue codes `validate` must report."""


def uid(n: int) -> str:
    return f"5f0c{n:04x}-6b1d-4c8e-9a2f-7d3e1b0a{n:04x}"


def build() -> list[Sample]:
    s: list[Sample] = []

    def add(
        name: str,
        what: str,
        content: str | bytes,
        standard: str,
        valid: bool,
        marked: bool,
        apprec_: str,
        codes: list[str] | None = None,
    ) -> None:
        data = content.encode("utf-8") if isinstance(content, str) else content
        s.append(Sample(name, what, data, standard, valid, marked, apprec_, codes or []))

    p = PATIENTS
    k = xhtml(*KARTLEGGING)
    add(
        "dlg11-marked-tema.xml",
        "Helsefaglig dialog from a Helseplattformen hospital; marking in Tema",
        dialog11(uid(1), PHRASE, k),
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    add(
        "dlg11-marked-text.xml",
        "marking only in the note text (XHTML paragraphs)",
        dialog11(uid(2), "Kartlegging av behov", xhtml(f"Gjelder: {PHRASE}.", *KARTLEGGING)),
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    add(
        "dlg11-marked-temakodet-dn.xml",
        "marking in the display text of TemaKodet",
        dialog11(uid(3), "Behovskartlegging", k, tema_dn=PHRASE),
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    add(
        "dlg11-marked-nynorsk.xml",
        "nynorsk marking «Pakkeforløp heim for pasientar med kreft» in Tema",
        dialog11(
            uid(4),
            "Pakkeforløp heim for pasientar med kreft",
            xhtml("Kartlegging av behov er gjennomført.", "Pasienten ønskjer kontakt med kommunen."),
            patient=p[2],
        ),
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    add(
        "dlg11-marked-kreftpasienter.xml",
        "older working title «Pakkeforløp hjem for kreftpasienter» in text",
        dialog11(
            uid(5),
            "Henvendelse om pasient",
            xhtml("Pakkeforløp hjem for kreftpasienter: kartlegging.", *KARTLEGGING[1:]),
            patient=p[3],
        ),
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    add(
        "dlg11-marked-xhtml-split.xml",
        "the phrase split by inline XHTML markup and a line break",
        dialog11(
            uid(6),
            "Kartlegging",
            '<div xmlns="http://www.w3.org/1999/xhtml"><p><b>Pakkeforløp</b>\n'
            "<i>hjem</i> for pasienter med kreft</p><p>Behov kartlagt.</p></div>",
        ),
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    add(
        "dlg11-marked-gp-role.xml",
        "marked; the patient's GP named in RollerRelatertNotat (RoleToPatient 6)",
        dialog11(uid(7), PHRASE, k, roles=gp_role11()),
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    add(
        "dlg11-marked-gp-copy.xml",
        "marked; the GP is already a copy receiver (OtherReceiver COP)",
        dialog11(uid(8), PHRASE, k, other=gp_other_receiver(), patient=p[4]),
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    add(
        "dlg11-marked-attachment.xml",
        "marked, with a PDF attachment in a second Document",
        dialog11(uid(9), PHRASE, k, extra_docs=pdf_document()),
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    add(
        "dlg11-marked-municipality-b.xml",
        "marked, to the second municipality's case unit",
        dialog11(uid(10), "Pakkeforløp hjem – kreft", k, receiver=muni(MUNI_B), patient=p[3]),
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    add(
        "dlg11-unmarked.xml",
        "an ordinary helsefaglig dialog about a patient, not the pathway",
        dialog11(
            uid(11), "Spørsmål om hjemmesykepleie", xhtml("Pasienten skrives ut fredag.", "Trenger sårstell.")
        ),
        "dialogmelding-1.1",
        True,
        False,
        "1",
    )
    add(
        "dlg11-diagnostic-pathway.xml",
        "mentions the diagnostic pathway «pakkeforløp for lungekreft», not «hjem»",
        dialog11(
            uid(12),
            "Henvendelse om pasient",
            xhtml("Pasienten er henvist i pakkeforløp for lungekreft.", "Forløpskode A01 er registrert."),
        ),
        "dialogmelding-1.1",
        True,
        False,
        "1",
    )
    add(
        "dlg11-negated.xml",
        "says plainly the patient is not included («ikke inkludert i Pakkeforløp hjem»)",
        dialog11(
            uid(13),
            "Henvendelse om pasient",
            xhtml("Pasienten er ikke inkludert i Pakkeforløp hjem.", "Ordinær oppfølging hos fastlege."),
        ),
        "dialogmelding-1.1",
        True,
        False,
        "1",
    )
    add(
        "dlg11-prefixed-root.xml",
        "marked; MsgHead elements written with an mh: prefix",
        dialog11(uid(14), PHRASE, k, root_prefix="mh"),
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    add(
        "dlg11-iso-8859-1-crlf.xml",
        "marked; ISO-8859-1 encoded with CRLF line ends",
        dialog11(uid(15), PHRASE, k)
        .replace('encoding="UTF-8"', 'encoding="ISO-8859-1"')
        .replace("\n", "\r\n")
        .encode("iso-8859-1"),
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    add(
        "dlg11-bom-cr.xml",
        "marked; UTF-8 with a byte-order mark and CR-only line ends",
        b"\xef\xbb\xbf" + dialog11(uid(16), PHRASE, k).replace("\n", "\r").encode(),
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    wrapped = dialog11(uid(17), PHRASE, k).split("\n", 1)[1]
    add(
        "dlg11-wrapped.xml",
        "marked; the MsgHead inside a hub's wrapper element",
        '<?xml version="1.0" encoding="UTF-8"?>\n<Hub:Envelope xmlns:Hub="urn:example:hub">'
        f"<Hub:Received>2026-10-05T09:15:00</Hub:Received>{wrapped}</Hub:Envelope>\n",
        "dialogmelding-1.1",
        True,
        True,
        "1",
        ["WRAPPED"],
    )
    # Dialogmelding 1.0
    add(
        "dlg10-notat-marked.xml",
        "Dialogmelding 1.0 note (DIALOG_NOTAT) with the marking in Tema",
        dialog10(
            uid(20),
            "DIALOG_NOTAT",
            notat10(PHRASE, "Behovskartlegging gjennomført. Diagnose stilt 3. september 2026."),
            p[4],
        ),
        "dialogmelding-1.0",
        True,
        True,
        "1",
    )
    add(
        "dlg10-notat-unmarked.xml",
        "Dialogmelding 1.0 note about medication, unmarked",
        dialog10(uid(21), "DIALOG_NOTAT", notat10("Legemidler", "Oppdatert legemiddelliste følger."), p[0]),
        "dialogmelding-1.0",
        True,
        False,
        "1",
    )
    add(
        "dlg10-foresporsel-marked.xml",
        "Dialogmelding 1.0 request whose question carries the marking",
        dialog10(
            uid(22),
            "DIALOG_FORESPORSEL",
            foresporsel10(
                f"{PHRASE}: når kan kommunen ta kontakt med pasienten?", "Oppfølging etter kartlegging"
            ),
            p[1],
        ),
        "dialogmelding-1.0",
        True,
        True,
        "1",
    )
    conv = f"<ConversationRef><RefToParent>{uid(22)}</RefToParent><RefToConversation>{uid(22)}</RefToConversation></ConversationRef>"
    svar = (
        '<Notat><TemaKodet V="5" S="2.16.578.1.12.4.1.1.9069" DN="Svar på forespørsel"/><Tema>Svar</Tema>'
        "<TekstNotatInnhold>Kommunen tar kontakt neste uke.</TekstNotatInnhold>"
        + foresporsel10(f"{PHRASE}: når kan kommunen ta kontakt med pasienten?")
        + "</Notat>"
    )
    add(
        "dlg10-svar-quoting.xml",
        "an answer (DIALOG_SVAR) whose only marking is inside the quoted request",
        dialog10(uid(23), "DIALOG_SVAR", svar, p[1], conv),
        "dialogmelding-1.0",
        True,
        False,
        "1",
    )
    # Epikrise
    add(
        "epi12-marked-msgdescr.xml",
        "Doculive letter in epikrise format; marking in MsgDescr (the title)",
        epikrise(uid(30), msg_descr=PHRASE),
        "epikrise-1.2",
        True,
        True,
        "1",
    )
    add(
        "epi12-marked-heading.xml",
        "Epikrise whose comment heading text carries the marking",
        epikrise(
            uid(31),
            msg_descr="Poliklinisk notat",
            comments=[("OP", PHRASE, xhtml(*KARTLEGGING))],
            patient=p[2],
        ),
        "epikrise-1.2",
        True,
        True,
        "1",
    )
    add(
        "epi12-marked-comment.xml",
        "Epikrise with the marking inside the comment text",
        epikrise(
            uid(32),
            msg_descr="Poliklinisk notat",
            comments=[("VU", "Vurdering", xhtml(f"Pasienten er inkludert i {PHRASE}.", *KARTLEGGING))],
            patient=p[3],
        ),
        "epikrise-1.2",
        True,
        True,
        "1",
    )
    add(
        "epi12-marked-gp-relation.xml",
        "marked Epikrise naming the GP in Patient/PatRelHCP (FLE)",
        epikrise(uid(33), msg_descr=PHRASE, gp_relation=True, patient=p[4]),
        "epikrise-1.2",
        True,
        True,
        "1",
    )
    add(
        "epi12-marked-gp-copydest.xml",
        "marked Epikrise with the GP office as CopyDest",
        epikrise(uid(34), msg_descr=PHRASE, copy_gp=True),
        "epikrise-1.2",
        True,
        True,
        "1",
    )
    add(
        "epi12-unmarked.xml",
        "an ordinary discharge summary",
        epikrise(
            uid(35),
            msg_descr="Sykehusepikrise",
            comments=[("FO", "Forløp og behandling", xhtml("Innlagt for pneumoni. Utskrevet i bedring."))],
            diagnosis=("J18.9", "Pneumoni, uspesifisert", "2026-09-20"),
        ),
        "epikrise-1.2",
        True,
        False,
        "1",
    )
    add(
        "epi12-diagnostic-pathway.xml",
        "Epikrise in a diagnostic cancer pathway («pakkeforløp kreft», A01)",
        epikrise(
            uid(36),
            msg_descr="Poliklinisk notat",
            comments=[
                (
                    "VU",
                    "Vurdering",
                    xhtml(
                        "Pakkeforløp kreft: tykk- og endetarmskreft, forløpskode A01.",
                        "Videre utredning ved sykehuset.",
                    ),
                )
            ],
            diagnosis=("C18.7", "Ondartet svulst i colon sigmoideum", "2026-09-28"),
        ),
        "epikrise-1.2",
        True,
        False,
        "1",
    )
    add(
        "epi12-nynorsk-negated.xml",
        "nynorsk negation («ikkje aktuelt for pakkeforløp heim»)",
        epikrise(
            uid(37),
            msg_descr="Poliklinisk notat",
            comments=[("VU", "Vurdering", xhtml("Pasienten er ikkje aktuelt for pakkeforløp heim no."))],
        ),
        "epikrise-1.2",
        True,
        False,
        "1",
    )
    inner = epikrise(uid(38), msg_descr=PHRASE, declaration=False)
    add(
        "epi12-in-msghead.xml",
        "marked Epikrise carried inside a MsgHead (a local convention)",
        msghead(
            ("EPIKRISE", "Epikrise"),
            uid(38),
            inner.strip(),
            patient=patient_xml(p[1]),
            sender=org(HOSPITAL_DL[0], HOSPITAL_DL[1], (HOSPITAL_DL[2], HOSPITAL_DL[3])),
            receiver=muni(),
        ),
        "epikrise-1.2",
        True,
        True,
        "1",
    )
    add(
        "epi11-marked-msgdescr.xml",
        "older Epikrise 1.1 letter, marked in MsgDescr; its AppRec is version 1.0",
        epikrise(uid(39), ns=EPI11, msg_descr=PHRASE, mig="v1.1 2006-09-23"),
        "epikrise-1.1",
        True,
        True,
        "1",
    )
    # AppRecs we receive
    add(
        "apprec11-ok.xml",
        "AppRec 1.1, OK, from a GP office for a copy we sent",
        apprec("1.1", uid(40), uid(90), ("1", "OK")),
        "apprec-1.1",
        True,
        False,
        "none",
    )
    add(
        "apprec11-rejected.xml",
        "AppRec 1.1, rejected with E21 (unknown receiver)",
        apprec(
            "1.1",
            uid(41),
            uid(91),
            ("2", "Avvist"),
            '<Error V="E21" S="2.16.578.1.12.4.1.1.8221" DN="Mottaker finnes ikke"/>',
        ),
        "apprec-1.1",
        True,
        False,
        "none",
    )
    add(
        "apprec10-ok.xml",
        "AppRec 1.0, OK",
        apprec("1.0", uid(42), uid(92), ("1", "OK")),
        "apprec-1.0",
        True,
        False,
        "none",
    )
    add(
        "apprec11-status-without-error.xml",
        "AppRec 1.1 with status 2 but no Error: breaks the AppRec rules",
        apprec("1.1", uid(43), uid(93), ("2", "Avvist")),
        "apprec-1.1",
        False,
        False,
        "none",
        ["APPREC_STATUS_ERRORS"],
    )
    # Broken ones
    good = dialog11(uid(50), PHRASE, k)
    add(
        "broken-not-well-formed.xml",
        "cut off in the middle: not well-formed; sender still readable",
        good[: good.index("<Document>") + 40],
        "msghead-1.2",
        False,
        False,
        "2 T01",
        ["XML_NOT_WELL_FORMED"],
    )
    add(
        "broken-msgid-not-uuid.xml",
        "MsgId is not a UUID",
        dialog11("MELDING-0001", PHRASE, k),
        "dialogmelding-1.1",
        False,
        True,
        "2 E10",
        ["MSGID_NOT_UUID"],
    )
    add(
        "broken-patient-unidentified.xml",
        "patient with a name only: no national id, no birth date",
        msghead(
            ("DIALOG_HELSEFAGLIG", "Helsefaglig dialog"),
            uid(52),
            note11(PHRASE, k),
            patient=patient_xml(p[0], with_id=False, with_birth=False),
            sender=hospital_hp(),
            receiver=muni(),
        ),
        "dialogmelding-1.1",
        False,
        True,
        "2 E36",
        ["PATIENT_INSUFFICIENT"],
    )
    add(
        "broken-schema-order.xml",
        "Sender and Receiver in the wrong order: schema error only (accepted)",
        msghead(
            ("DIALOG_HELSEFAGLIG", "Helsefaglig dialog"),
            uid(53),
            note11(PHRASE, k),
            patient=patient_xml(p[0]),
            sender=hospital_hp(),
            receiver=muni(),
            swap_parties=True,
        ),
        "dialogmelding-1.1",
        False,
        True,
        "1",
        ["XSD_INVALID"],
    )
    add(
        "broken-unsupported-payload.xml",
        "MsgHead carrying a payload this product does not read",
        msghead(
            ("HENVISNING", "Henvisning"),
            uid(54),
            '<Henvisning xmlns="http://www.kith.no/xmlstds/henvisning/2005-07-08"><Tekst>x</Tekst></Henvisning>',
            patient=patient_xml(p[0]),
            sender=hospital_hp(),
            receiver=muni(),
        ),
        "msghead-1.2",
        False,
        False,
        "2 T10",
        ["PAYLOAD_UNSUPPORTED"],
    )
    add(
        "broken-dtd.xml",
        "declares a DTD with entities: refused unread",
        '<?xml version="1.0"?>\n<!DOCTYPE MsgHead [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>\n'
        f'<MsgHead xmlns="{MH}"><MsgInfo>&b;</MsgInfo></MsgHead>\n',
        "unknown",
        False,
        False,
        "none",
        ["XML_DTD_FORBIDDEN"],
    )
    add("broken-empty.xml", "an empty file", "", "unknown", False, False, "none", ["XML_EMPTY"])
    add(
        "broken-not-kith.xml",
        "well-formed XML that is no KITH message",
        '<?xml version="1.0"?>\n<order xmlns="urn:example:shop"><item>1</item></order>\n',
        "unknown",
        False,
        False,
        "none",
        ["NOT_KITH"],
    )
    # MIME and ebXML
    body = dialog11(uid(60), PHRASE, k)
    add(
        "mime-body.eml",
        "a MIME mail with the XML as its body",
        "From: hub@fjordvik.example\r\nTo: pfhjem@fjordvik.example\r\nSubject: DIALOG_HELSEFAGLIG\r\n"
        'MIME-Version: 1.0\r\nContent-Type: text/xml; charset="utf-8"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
        + dialog11(uid(61), PHRASE, k),
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    b64 = base64.encodebytes(body.encode()).decode().replace("\n", "\r\n")
    add(
        "mime-attachment.eml",
        "a MIME mail with the XML as a base64 attachment",
        "From: hub@fjordvik.example\r\nTo: pfhjem@fjordvik.example\r\nSubject: melding\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nSe vedlegg.\r\n'
        '--b1\r\nContent-Type: application/xml; name="melding.xml"\r\nContent-Transfer-Encoding: base64\r\n'
        'Content-Disposition: attachment; filename="melding.xml"\r\n\r\n' + b64 + "--b1--\r\n",
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    soap = (
        '<?xml version="1.0" encoding="UTF-8"?><SOAP:Envelope xmlns:SOAP="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:eb="http://www.oasis-open.org/committees/ebxml-msg/schema/msg-header-2_0.xsd"><SOAP:Header>'
        '<eb:MessageHeader SOAP:mustUnderstand="1" eb:version="2.0"><eb:From><eb:PartyId eb:type="HER">8100020</eb:PartyId></eb:From>'
        '<eb:To><eb:PartyId eb:type="HER">8300010</eb:PartyId></eb:To><eb:CPAId>8100020_8300010</eb:CPAId>'
        "<eb:ConversationId>c-1</eb:ConversationId><eb:Service>S-DIALOG_HELSEFAGLIG</eb:Service>"
        "<eb:Action>DIALOG_HELSEFAGLIG</eb:Action><eb:MessageData><eb:MessageId>m-1</eb:MessageId>"
        "<eb:Timestamp>2026-10-05T09:14:23Z</eb:Timestamp></eb:MessageData></eb:MessageHeader></SOAP:Header>"
        '<SOAP:Body><eb:Manifest eb:version="2.0"><eb:Reference xmlns:xlink="http://www.w3.org/1999/xlink" '
        'xlink:href="cid:payload-1"/></eb:Manifest></SOAP:Body></SOAP:Envelope>'
    )
    add(
        "ebxml-envelope.eml",
        "the whole ebXML message: SOAP envelope part, then the (decrypted) payload part",
        'MIME-Version: 1.0\r\nContent-Type: multipart/related; type="text/xml"; boundary="eb"; start="<soap>"\r\n'
        "SOAPAction: ebXML\r\n\r\n--eb\r\nContent-ID: <soap>\r\nContent-Type: text/xml; charset=utf-8\r\n\r\n"
        + soap
        + "\r\n--eb\r\nContent-ID: <payload-1>\r\nContent-Type: application/xml\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(dialog11(uid(62), PHRASE, k).encode()).decode().replace("\n", "\r\n")
        + "--eb--\r\n",
        "dialogmelding-1.1",
        True,
        True,
        "1",
    )
    add(
        "ebxml-encrypted.eml",
        "ebXML message whose payload is still encrypted: the hub did not decrypt it",
        'MIME-Version: 1.0\r\nContent-Type: multipart/related; type="text/xml"; boundary="eb"\r\n\r\n'
        "--eb\r\nContent-Type: text/xml\r\n\r\n" + soap + "\r\n--eb\r\n"
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "MIAGCSqGSIb3DQEHA6CAMIACAQAxggE=\r\n--eb--\r\n",
        "unknown",
        False,
        False,
        "none",
        ["ENVELOPE_ENCRYPTED"],
    )
    s.extend(signed_samples())
    return s


def signed_samples() -> list[Sample]:
    """A signed message and a tampered copy, with a throwaway key made for the purpose."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    from lxml import etree

    from pfhjem_msg.kith.signature import SigningKey, sign

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Helse Vestfjord HF (sample signer)")])
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(4711)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=365 * 50))
        .sign(key, hashes.SHA256())
    )
    signing = SigningKey(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        cert.public_bytes(serialization.Encoding.PEM),
    )
    root = etree.fromstring(dialog11(uid(70), PHRASE, xhtml(*KARTLEGGING)).encode())
    signed = etree.tostring(sign(root, signing), xml_declaration=True, encoding="UTF-8")
    tampered = signed.replace(b"Behovskartlegging er", b"Behovskartlegging ble")
    return [
        Sample(
            "signed-valid.xml",
            "marked, with an enveloped XML signature that verifies",
            signed,
            "dialogmelding-1.1",
            True,
            True,
            "1",
        ),
        Sample(
            "signed-tampered.xml",
            "the same message changed after signing: the signature fails",
            tampered,
            "dialogmelding-1.1",
            False,
            True,
            "2 S01",
            ["SIGNATURE_INVALID"],
        ),
    ]


def readme(samples: list[Sample]) -> str:
    rows = "\n".join(
        f"| {x.name} | {x.what} | {x.standard} | {'yes' if x.valid else 'no'} | {'yes' if x.marked else 'no'} "
        f"| {x.apprec} | {' '.join(x.codes)} |"
        for x in samples
    )
    return f"""# Sample messages

Realistic KITH messages written for this project. Every person, institution, HER-id and
national id is invented (national ids in the synthetic range, month + 80). They are generated
by `tools/make_samples.py`; `tests/test_samples.py` holds the product to this table.

Columns:
- **standard**: what `validate` must report (`unknown` when nothing could be read).
- **valid**: whether `validate` passes the file (exit 0) against our schemas and rules.
- **marked**: whether the file is «Pakkeforløp hjem for pasienter med kreft».
- **AppRec**: what `apprec` must produce with default settings: `1` (OK), `2` with its 8221
  error codes, or `none` (no AppRec is due: it is an AppRec, or the sender cannot be read).
- **issues**: issue codes `validate` must report.

`.eml` files are what a hub may hand over instead of bare XML (MIME mail, ebXML); pass them to
`validate` by name (directory scans pick up `*.xml` only).

| file | what it is | standard | valid | marked | AppRec | issues |
|---|---|---|---|---|---|---|
{rows}
"""


def main() -> int:
    samples = build()
    OUT.mkdir(exist_ok=True)
    for old in list(OUT.glob("*.xml")) + list(OUT.glob("*.eml")):
        old.unlink()
    for x in samples:
        (OUT / x.name).write_bytes(x.content)
    (OUT / "README.md").write_text(readme(samples), encoding="utf-8")
    print(f"wrote {len(samples)} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
