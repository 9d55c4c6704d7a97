"""The labelled corpus: every spelling of the marking in every place it can sit, every
negative the detector must not fire on, bokmål and nynorsk. Precision and recall are printed;
anything below 100 % fails."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

import pytest

from pfhjem_msg.kith.verdict import examine
from pfhjem_msg.pathway import Matcher, MatcherConfig, detect
from tools import make_samples as ms

POSITIVE = [
    "Pakkeforløp hjem for pasienter med kreft",
    "Pakkeforløp heim for pasientar med kreft",
    "Pakkeforløp hjem for kreftpasienter",
    "Pakkeforløp heim for kreftpasientar",
    "Pakkeforløp hjem – kreft",
    "Pakkeforløp hjem - kreft",
    "Pakkeforløp hjem",
    "Pakkeforløp heim",
    "PAKKEFORLØP HJEM FOR PASIENTER MED KREFT",
    "pakkeforløp\u00a0hjem for pasienter med kreft",
    "Pakkeforløp\nhjem for pasienter\nmed kreft",
    "Pakkeforløp-hjem",
    "Pakkeforløp — hjem",
    "Pakkeforlop hjem for pasienter med kreft",
    "Pakkeforloep hjem",
    "Pakkeforlöp hjem for pasienter med kreft",
    "Pakkeforl\ufffdp hjem for pasienter med kreft",
    "PakkeforlÃ¸p hjem for pasienter med kreft",
    "Pasienten er inkludert i pakkeforløp hjem for pasienter med kreft.",
    "Pakkeforløp   hjem\tfor  pasienter med kreft",
    "Pasienten har ikke fastlege. Pakkeforløp hjem for pasienter med kreft.",
]
NEGATIVE = [
    "Pakkeforløp for lungekreft",
    "Pakkeforløp kreft",
    "Forløpskode A01 registrert",
    "Pasienten er ikke inkludert i Pakkeforløp hjem.",
    "Ikkje aktuelt for pakkeforløp heim.",
    "Pasienten takket nei til Pakkeforløp hjem",
    "Pasienten ønsker ikke Pakkeforløp hjem",
    "Pakkeforløp for brystkreft, forløpskode A02",
    "Hjemmesykepleie etter pakkeforløp for tykktarmskreft",
    "Pakkeforløp hjemmebasert oppfølging",
    "> Pakkeforløp hjem for pasienter med kreft",
    "Takk for svaret.\n-----Opprinnelig melding-----\nPakkeforløp hjem for pasienter med kreft",
    "Den 3. oktober skrev Kari Lege:\nPakkeforløp hjem for pasienter med kreft",
    "Pasienten er utskrevet til hjemmet.",
]
# Places a marking can sit; XHTML-capable ones also take markup inside the phrase.
PLACES = ["dlg11-tema", "dlg11-dn", "dlg11-text", "dlg11-subject", "dlg11-question",
          "dlg10-tema", "dlg10-text", "epi-msgdescr", "epi-heading", "epi-comment", "mh-description"]  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    xml: bytes
    marked: bool


def _note11(tema: str, text: str, dn: str = "Henvendelse om pasient") -> str:
    return (
        f'<Dialogmelding xmlns="{ms.DLG11}"><Notat><TemaKodet V="6" S="2.16.578.1.12.4.1.1.7322" DN={quoteattr(dn)}/>'
        f"<Tema>{escape(tema)}</Tema><TekstNotatInnhold>{text}</TekstNotatInnhold></Notat></Dialogmelding>"
    )


def _request11(subject: str, question: str) -> str:
    return (
        f'<Dialogmelding xmlns="{ms.DLG11}"><Foresporsel><TypeForesp V="1" S="2.16.578.1.12.4.1.1.8331" '
        f'DN="Generell forespørsel"/><EmneSporsmal>{escape(subject)}</EmneSporsmal>'
        f"<Sporsmal>{question}</Sporsmal></Foresporsel></Dialogmelding>"
    )


def _msghead(payload: str, kind: str = "DIALOG_HELSEFAGLIG", description: str = "") -> str:
    xml = ms.msghead((kind, kind), ms.uid(99), payload, patient=ms.patient_xml(ms.PATIENTS[0]),
                     sender=ms.hospital_hp(), receiver=ms.muni())  # fmt: skip
    if description:
        xml = xml.replace(
            "<RefDoc>", f"<ContentDescription>{escape(description)}</ContentDescription><RefDoc>", 1
        )
    return xml


def build(place: str, text: str) -> bytes:
    plain = escape(text)
    html = f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{plain}</p></div>'
    neutral = "Henvendelse om pasient"
    if place == "dlg11-tema":
        xml = _msghead(_note11(text, "Se vedlegg."))
    elif place == "dlg11-dn":
        xml = _msghead(_note11(neutral, "Se vedlegg.", dn=text))
    elif place == "dlg11-text":
        xml = _msghead(_note11(neutral, html))
    elif place == "dlg11-subject":
        xml = _msghead(_request11(text, "Når kan kommunen ta kontakt?"))
    elif place == "dlg11-question":
        xml = _msghead(_request11("Spørsmål", html))
    elif place == "dlg10-tema":
        xml = _msghead(
            f'<Dialogmelding xmlns="{ms.DLG10}" xmlns:fk1="{ms.FK1}">'
            + ms.notat10(escape(text), "Se vedlegg.")
            + "</Dialogmelding>",
            "DIALOG_NOTAT",
        )
    elif place == "dlg10-text":
        xml = _msghead(
            f'<Dialogmelding xmlns="{ms.DLG10}" xmlns:fk1="{ms.FK1}">'
            + ms.notat10(neutral, plain)
            + "</Dialogmelding>",
            "DIALOG_NOTAT",
        )
    elif place == "epi-msgdescr":
        xml = ms.epikrise(ms.uid(98), msg_descr=plain, comments=[("FO", "Forløp", "Ingen merknader.")])
    elif place == "epi-heading":
        xml = ms.epikrise(
            ms.uid(98), msg_descr="Notat", comments=[("OP", text.replace("\n", " "), "Se under.")]
        )
        xml = xml.replace(f'DN="{text.replace(chr(10), " ")}"', f"DN={quoteattr(text)}")
    elif place == "epi-comment":
        xml = ms.epikrise(ms.uid(98), msg_descr="Notat", comments=[("VU", "Vurdering", html)])
    elif place == "mh-description":
        xml = _msghead(_note11(neutral, "Se vedlegg."), description=text)
    else:
        raise ValueError(place)
    return xml.encode("utf-8")


def cases() -> list[Case]:
    out = []
    for i, text in enumerate(POSITIVE):
        for k in range(3):  # each spelling in three different places
            place = PLACES[(i + k * 4) % len(PLACES)]
            out.append(Case(f"pos{i:02d}-{place}", build(place, text), True))
    for i, text in enumerate(NEGATIVE):
        for k in range(2):
            place = PLACES[(i * 2 + k * 5) % len(PLACES)]
            if text.startswith((">", "Takk", "Den 3")) and place in (
                "dlg11-tema",
                "dlg11-dn",
                "epi-heading",
                "epi-msgdescr",
                "dlg11-subject",
                "dlg10-tema",
                "mh-description",
            ):
                place = "dlg10-text"  # quoting needs line structure: free text only
            out.append(Case(f"neg{i:02d}-{place}-{k}", build(place, text), False))
    split = '<div xmlns="http://www.w3.org/1999/xhtml"><p><b>Pakkeforløp</b> <i>hjem</i> for pasienter med kreft</p></div>'
    out.append(Case("pos-xhtml-split-dialog", _msghead(_note11("Notat", split)).encode(), True))
    out.append(
        Case(
            "pos-xhtml-split-epikrise",
            ms.epikrise(ms.uid(97), msg_descr="Notat", comments=[("VU", "Vurdering", split)]).encode(),
            True,
        )
    )
    quoted_answer = (
        f'<Dialogmelding xmlns="{ms.DLG10}" xmlns:fk1="{ms.FK1}"><Notat><TemaKodet V="5" S="2.16.578.1.12.4.1.1.9069" DN="Svar"/>'
        "<TekstNotatInnhold>Vi tar kontakt.</TekstNotatInnhold>"
        + ms.foresporsel10("Pakkeforløp hjem for pasienter med kreft: når?")
        + "</Notat></Dialogmelding>"
    )
    out.append(Case("neg-quoted-request-in-answer", _msghead(quoted_answer, "DIALOG_SVAR").encode(), False))
    return out


CASES = cases()


def test_corpus_is_large_and_balanced() -> None:
    assert len(CASES) >= 80
    assert sum(c.marked for c in CASES) >= 40 and sum(not c.marked for c in CASES) >= 25
    places_used = {place for c in CASES if c.marked for place in PLACES if place in c.name}
    assert places_used == set(PLACES)


def test_precision_and_recall_are_perfect(capsys: pytest.CaptureFixture[str]) -> None:
    tp = fp = fn = tn = 0
    wrong = []
    for case in CASES:
        verdict = examine(case.xml, case.name)
        assert verdict.message is not None, (case.name, [i.code for i in verdict.issues])
        got = detect(verdict.message).marked
        tp += got and case.marked
        fp += got and not case.marked
        fn += (not got) and case.marked
        tn += (not got) and not case.marked
        if got != case.marked:
            wrong.append(case.name)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    with capsys.disabled():
        print(
            f"\npathway corpus: {len(CASES)} cases, precision {precision:.1%}, recall {recall:.1%} "
            f"(tp {tp}, fp {fp}, fn {fn}, tn {tn})"
        )
    assert not wrong, f"misclassified: {wrong}"
    assert precision == 1.0 and recall == 1.0


def test_every_case_is_valid_kith() -> None:
    for case in CASES:
        verdict = examine(case.xml, case.name)
        assert verdict.valid, (
            case.name,
            [(i.code, i.message) for i in verdict.issues if i.severity == "error"],
        )


def test_negation_reason_and_diagnostic_reason() -> None:
    negated = detect(examine(build("dlg11-text", NEGATIVE[3])).message)  # type: ignore[arg-type]
    assert not negated.marked and "negates" in (negated.not_marked_reason or "")
    assert negated.negated and negated.negated[0].negated_by == "ikke"
    diagnostic = detect(examine(build("dlg11-text", NEGATIVE[0])).message)  # type: ignore[arg-type]
    assert "diagnostic" in (diagnostic.not_marked_reason or "")


def test_rules_are_reported_most_specific_first() -> None:
    def rules(text: str) -> list[str]:
        return [m.rule for m in detect(examine(build("dlg11-tema", text)).message).matches]  # type: ignore[arg-type]

    assert rules("Pakkeforløp hjem for pasienter med kreft") == ["full"]
    assert rules("Pakkeforløp hjem for kreftpasienter") == ["kreftpasienter"]
    assert rules("Pakkeforløp hjem – kreft") == ["kreft"]
    assert rules("Pakkeforløp heim") == ["short"]


def test_operator_can_add_a_local_phrase() -> None:
    msg = examine(build("dlg11-tema", "Heimeteneste etter kreft – Nordfjordmodellen")).message
    assert msg is not None
    assert not detect(msg).marked
    local = Matcher(MatcherConfig(phrases=("Heimeteneste etter kreft",)))
    hit = detect(msg, local)
    assert hit.marked and hit.matches[0].rule == "local:1"
