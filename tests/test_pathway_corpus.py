"""The labelled corpus (tests/pathway_corpus/*.toml): messages written the way hospital
clinicians and secretaries write, labelled by what a reader at the municipality would
conclude, grouped by category. Each case's text is put into real KITH messages (Dialogmelding
1.0 and 1.1, Epikrise, Epikrise inside MsgHead) at the places it lists, and run through
``examine`` and ``decide`` as the daemon does. Precision, recall, contact-point, date,
lifecycle and plan accuracy are printed per category (case ids only, never text); anything
below 100 % fails."""

from __future__ import annotations

import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pfhjem_msg.config import Settings, load
from pfhjem_msg.decision import MessageDecision, decide
from pfhjem_msg.drafting import followup_facts
from pfhjem_msg.kith.verdict import examine
from pfhjem_msg.pathway import Matcher, MatcherConfig, analyse, detect
from tests.conftest import ROOT
from tools import make_samples as ms

CORPUS = Path(__file__).parent / "pathway_corpus"
NARRATIVE = Path(__file__).parent / "pathway_narrative.toml"
DEMO = ROOT / "config" / "demo.toml"
NEUTRAL = "Henvendelse om pasient"


@dataclass(frozen=True)
class Case:
    category: str
    id: str
    place: str
    text: str
    marked: bool
    labels: dict[str, Any] = field(default_factory=dict)
    source: str = "corpus"

    @property
    def name(self) -> str:
        prefix = "" if self.source == "corpus" else f"{self.source}:"
        return f"{prefix}{self.category}/{self.id}@{self.place}"


def _lines_xhtml(text: str) -> str:
    paragraphs = "".join(f"<p>{escape(line)}</p>" for line in text.split("\n"))
    return f'<div xmlns="http://www.w3.org/1999/xhtml">{paragraphs}</div>'


def _words_xhtml(text: str) -> str:
    """Every word in its own inline element: the phrase split by markup."""
    words = " ".join(f"<span>{escape(w)}</span>" for w in text.split(" "))
    return f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{words}</p></div>'


def _note11(tema: str, body: str, merknad: str = "", quoted: str = "") -> str:
    extra = f"<Merknad>{escape(merknad)}</Merknad>" if merknad else ""
    request = ""
    if quoted:
        request = (
            '<Foresporsel><TypeForesp V="1" S="2.16.578.1.12.4.1.1.8331" DN="Generell forespørsel"/>'
            f"<Sporsmal>{escape(quoted)}</Sporsmal></Foresporsel>"
        )
    return (
        f'<Dialogmelding xmlns="{ms.DLG11}"><Notat><TemaKodet V="6" S="2.16.578.1.12.4.1.1.7322" '
        f'DN="{NEUTRAL}"/><Tema>{escape(tema)}</Tema><TekstNotatInnhold>{body}</TekstNotatInnhold>'
        f"{extra}{request}</Notat></Dialogmelding>"
    )


def _request11(subject: str, question: str) -> str:
    return (
        f'<Dialogmelding xmlns="{ms.DLG11}"><Foresporsel><TypeForesp V="1" S="2.16.578.1.12.4.1.1.8331" '
        f'DN="Generell forespørsel"/><EmneSporsmal>{escape(subject)}</EmneSporsmal>'
        f"<Sporsmal>{escape(question)}</Sporsmal></Foresporsel></Dialogmelding>"
    )


def _msghead(payload: str, labels: dict[str, Any], kind: str = "DIALOG_HELSEFAGLIG", description: str = "",
             extra_docs: str = "") -> str:  # fmt: skip
    person = ms.PATIENTS[0]
    if "patient_name" in labels:
        family, given = labels["patient_name"]
        person = ms.Person(given, family, person.fnr, person.birth, person.sex)
    patient = ms.patient_xml(person) if labels.get("patient", True) else ""
    xml = ms.msghead((kind, kind), ms.uid(99), payload, patient=patient, sender=ms.hospital_hp(),
                     receiver=ms.muni(), extra_docs=extra_docs)  # fmt: skip
    if description:
        xml = xml.replace(
            "<RefDoc>", f"<ContentDescription>{escape(description)}</ContentDescription><RefDoc>", 1
        )
    return xml


def _epikrise(labels: dict[str, Any], msg_descr: str = "Notat", comments: list[tuple[str, str, str]] | None = None,
              declaration: bool = True) -> str:  # fmt: skip
    date = labels.get("epi_diagnosis")
    diagnosis = ("C50.9", "Brystkreft", date) if date else None
    return ms.epikrise(ms.uid(98), msg_descr=msg_descr, comments=comments or [], diagnosis=diagnosis,
                       declaration=declaration)  # fmt: skip


def build(place: str, text: str, labels: dict[str, Any]) -> bytes:
    plain = escape(text)
    quoted = str(labels.get("quoted_request", ""))
    if place == "dlg11-text":
        xml = _msghead(_note11("Notat", _lines_xhtml(text)), labels)
    elif place == "dlg11-text-with-tema":
        xml = _msghead(_note11(str(labels["tema"]), _lines_xhtml(text)), labels)
    elif place == "epi-comment-with-heading":
        xml = _epikrise(
            labels, comments=[("VU", "Vurdering", _lines_xhtml(text))], msg_descr=str(labels["tema"])
        )
    elif place == "dlg11-tema":
        xml = _msghead(_note11(text, "Se vedlegg."), labels)
    elif place == "dlg11-merknad":
        xml = _msghead(_note11("Notat", "Se vedlegg.", merknad=text), labels)
    elif place == "dlg11-subject":
        xml = _msghead(_request11(text, "Når kan kommunen ta kontakt?"), labels)
    elif place == "dlg11-answer":
        xml = _msghead(_note11("Svar", _lines_xhtml(text), quoted=quoted), labels, "DIALOG_SVAR")
    elif place == "dlg10-text":
        xml = _msghead(f'<Dialogmelding xmlns="{ms.DLG10}" xmlns:fk1="{ms.FK1}">'
                       + ms.notat10(NEUTRAL, plain) + "</Dialogmelding>", labels, "DIALOG_NOTAT")  # fmt: skip
    elif place == "dlg10-tema":
        xml = _msghead(f'<Dialogmelding xmlns="{ms.DLG10}" xmlns:fk1="{ms.FK1}">'
                       + ms.notat10(plain, "Se vedlegg.") + "</Dialogmelding>", labels, "DIALOG_NOTAT")  # fmt: skip
    elif place == "dlg10-answer":
        payload = (
            f'<Dialogmelding xmlns="{ms.DLG10}" xmlns:fk1="{ms.FK1}"><Notat><TemaKodet V="5" '
            f'S="2.16.578.1.12.4.1.1.9069" DN="Svar"/><TekstNotatInnhold>{plain}</TekstNotatInnhold>'
            + ms.foresporsel10(escape(quoted))
            + "</Notat></Dialogmelding>"
        )
        xml = _msghead(payload, labels, "DIALOG_SVAR")
    elif place == "mh-description":
        xml = _msghead(_note11("Notat", "Se vedlegg."), labels, description=text)
    elif place == "attachment-title":
        xml = _msghead(_note11("Notat", "Se vedlegg."), labels, extra_docs=ms.pdf_document(plain))
    elif place == "epi-comment":
        xml = _epikrise(labels, comments=[("VU", "Vurdering", _lines_xhtml(text))])
    elif place == "epi-xhtml-split":
        xml = _epikrise(labels, comments=[("VU", "Vurdering", _words_xhtml(text))])
    elif place == "epi-msgdescr":
        xml = _epikrise(labels, msg_descr=plain, comments=[("FO", "Forløp", "Ingen merknader.")])
    elif place == "epi-heading":
        xml = _epikrise(labels, comments=[("OP", "Oppfølging", "Se under.")])
        xml = xml.replace('DN="Oppfølging"', f"DN={quoteattr(text)}", 1)
    elif place == "epi-in-msghead":
        inner = _epikrise(labels, comments=[("VU", "Vurdering", _lines_xhtml(text))], declaration=False)
        xml = _msghead(inner.strip(), labels, "EPIKRISE")
    else:
        raise ValueError(place)
    return xml.encode("utf-8")


def _cases_of(category: str, data: dict[str, Any], source: str) -> list[Case]:
    out: list[Case] = []
    for entry in data["case"]:
        labels = {k: v for k, v in entry.items() if k not in ("id", "text", "marked", "places")}
        for place in entry.get("places", data["places"]):
            out.append(Case(category, entry["id"], place, entry["text"], entry["marked"], labels, source))
    return out


def load_cases() -> list[Case]:
    """The first corpus (one file per category) and the narrative set (one file, a table per
    category), written later, label first, in wordings the first corpus does not use."""
    out: list[Case] = []
    for path in sorted(CORPUS.glob("*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        out += _cases_of(data["category"], data, "corpus")
    narrative = tomllib.loads(NARRATIVE.read_text(encoding="utf-8"))
    for category, data in narrative.items():
        out += _cases_of(category, data, "narrative")
    return out


CASES = load_cases()


@pytest.fixture(scope="module")
def demo() -> Settings:
    return load(DEMO)


def _decision(case: Case, demo: Settings) -> MessageDecision:
    verdict = examine(build(case.place, case.text, case.labels), case.name)
    assert verdict.message is not None, (case.name, [i.code for i in verdict.issues])
    return decide(verdict, demo, None)


def test_corpus_is_large_and_covers_every_category() -> None:
    assert len(CASES) >= 250
    categories = {c.category for c in CASES}
    assert categories == {"positive", "encoding", "negation", "quoting", "contact_point", "dates", "lifecycle",
                          "routing"}  # fmt: skip
    assert sum(c.marked for c in CASES) >= 120 and sum(not c.marked for c in CASES) >= 80
    assert len({(c.source, c.category, c.id, c.place) for c in CASES}) == len(CASES), "case ids repeat"
    narrative = [c for c in CASES if c.source == "narrative"]
    assert len({(c.category, c.id) for c in narrative}) >= 120
    assert {c.category for c in narrative} == categories


def test_every_case_is_valid_kith() -> None:
    bad = []
    for case in CASES:
        verdict = examine(build(case.place, case.text, case.labels), case.name)
        if verdict.valid != case.labels.get("valid", True):
            bad.append((case.name, [i.code for i in verdict.issues if i.severity == "error"]))
    assert not bad


class Score:
    def __init__(self) -> None:
        self.tp = self.fp = self.fn = self.tn = 0
        self.right: dict[str, int] = defaultdict(int)
        self.total: dict[str, int] = defaultdict(int)

    def check(self, what: str, ok: bool) -> None:
        self.total[what] += 1
        self.right[what] += ok

    def ratio(self, what: str) -> str:
        return f"{self.right[what] / self.total[what]:.0%}" if self.total[what] else "-"

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def _judge(case: Case, d: MessageDecision, score: Score) -> list[str]:
    """What this case got wrong (label names only)."""
    wrong = []
    facts = d.facts
    assert facts is not None
    got = facts.detection.marked
    score.tp += got and case.marked
    score.fp += got and not case.marked
    score.fn += (not got) and case.marked
    score.tn += (not got) and not case.marked
    if got != case.marked:
        wrong.append(f"marked={got}")
    labels = case.labels
    if case.marked and got:
        expected_point = int(labels.get("point", 1))
        score.check("point", facts.contact_point.value == expected_point)
        if facts.contact_point.value != expected_point:
            wrong.append(f"point={facts.contact_point.value}")
    if "date" in labels:
        got_date = facts.diagnosis.value.isoformat() if facts.diagnosis else "none"  # type: ignore[attr-defined]
        score.check("date", got_date == labels["date"])
        if got_date != labels["date"]:
            wrong.append(f"date={got_date}")
    if "lifecycle" in labels:
        score.check("lifecycle", facts.lifecycle == labels["lifecycle"])
        if facts.lifecycle != labels["lifecycle"]:
            wrong.append(f"lifecycle={facts.lifecycle}")
    if "plan" in labels:
        plan = followup_facts(d)
        planned = bool(plan and plan.windows)
        score.check("plan", planned == labels["plan"])
        if planned != labels["plan"]:
            wrong.append(f"plan={planned}")
    if case.category == "routing":
        roles = [r.role for r in d.routing.recipients]
        if "route" in labels:
            ok, roles = d.routing.action == labels["route"], [d.routing.action]
        else:
            ok = ("case_unit" in roles) if case.marked else roles == ["default"]
        score.check("route", ok)
        if not ok:
            wrong.append(f"route={roles}")
    return wrong


def test_corpus_scores_are_perfect_per_category(demo: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    scores: dict[tuple[str, str], Score] = defaultdict(Score)
    wrong: list[str] = []
    for case in CASES:
        problems = _judge(case, _decision(case, demo), scores[(case.source, case.category)])
        if problems:
            wrong.append(f"{case.name}: {', '.join(problems)}")
    lines = []
    for source in ("corpus", "narrative"):
        count = sum(c.source == source for c in CASES)
        lines.append(f"\npathway {source}: {count} cases")
        lines.append(f"{'category':<14} {'cases':>5} {'prec':>5} {'recall':>6} {'point':>5} {'date':>5} "
                     f"{'life':>5} {'plan':>5} {'route':>5}")  # fmt: skip
        for (src, name), s in sorted(scores.items()):
            if src != source:
                continue
            n = s.tp + s.fp + s.fn + s.tn
            lines.append(
                f"{name:<14} {n:>5} {s.precision:>5.0%} {s.recall:>6.0%} {s.ratio('point'):>5} "
                f"{s.ratio('date'):>5} {s.ratio('lifecycle'):>5} {s.ratio('plan'):>5} {s.ratio('route'):>5}"
            )
    with capsys.disabled():
        print("\n".join(lines))
        if wrong:
            print("wrong:\n  " + "\n  ".join(wrong))
    assert not wrong


def test_explain_names_the_negating_word_and_its_clause(demo: Settings) -> None:
    case = Case("negation", "x", "dlg11-text", "Pasienten er informert om Pakkeforløp hjem, men pasienten takket nei.",
                False)  # fmt: skip
    d = _decision(case, demo).as_dict()
    assert d["marked"] is False
    assert d["negated"][0]["negated_by"] == "takket nei"
    assert "pakkeforløp hjem, men pasienten takket nei" in d["negated"][0]["negation_clause"]
    assert "«takket nei»" in d["not_marked_reason"]


def test_explain_says_why_the_point_is_the_default(demo: Settings) -> None:
    planned = _decision(Case("c", "x", "dlg11-text", "Pakkeforløp hjem. Kommunen følger opp ved samhandlingspunkt 2 "
                             "og 3.", True), demo).as_dict()  # fmt: skip
    assert planned["contact_point"] == 1 and "later plan" in planned["contact_point_reason"]
    plain = _decision(Case("c", "x", "dlg11-text", "Pakkeforløp hjem.", True), demo).as_dict()
    assert "default" in plain["contact_point_reason"] and plain["lifecycle"] == "start"
    assert [w["point"] for w in plain["followups"]] == [2, 3]


def test_impossible_diagnosis_date_is_a_note_not_a_crash(demo: Settings) -> None:
    d = _decision(
        Case("d", "x", "dlg11-text", "Pakkeforløp hjem. Diagnosedato: 12.10.9999", True), demo
    ).as_dict()
    assert d["diagnosis_date"] is None
    assert any("cannot be a date" in n for n in d["pathway_notes"])
    assert d["followups"] and d["followups"][0]["anchor"] == "estimated"


def test_no_patient_plans_nothing_and_says_why(demo: Settings) -> None:
    case = Case(
        "r", "x", "dlg11-text", "Informasjon om Pakkeforløp hjem til kommunene.", True, {"patient": False}
    )
    d = _decision(case, demo)
    assert d.facts is not None and d.facts.detection.marked
    assert followup_facts(d) is None
    assert "names no patient" in d.as_dict()["plan_reason"]


def test_rules_are_reported_most_specific_first() -> None:
    def rules(text: str) -> list[str]:
        verdict = examine(build("dlg11-tema", text, {}))
        assert verdict.message is not None
        return [m.rule for m in detect(verdict.message, root=verdict.root).matches]

    assert rules("Pakkeforløp hjem for pasienter med kreft") == ["full"]
    assert rules("Pakkeforløp hjem for kreftpasienter") == ["kreftpasienter"]
    assert rules("Pakkeforløp hjem – kreft") == ["kreft"]
    assert rules("Pakkeforløp heim") == ["short"]


def test_operator_can_add_a_local_phrase_and_negation() -> None:
    verdict = examine(build("dlg11-tema", "Heimeteneste etter kreft – Nordfjordmodellen", {}))
    assert verdict.message is not None
    assert not detect(verdict.message, root=verdict.root).marked
    local = Matcher(MatcherConfig(phrases=("Heimeteneste etter kreft",)))
    hit = detect(verdict.message, local, root=verdict.root)
    assert hit.marked and hit.matches[0].rule == "local:1"
    declined = examine(build("dlg11-text", "Pakkeforløp hjem: frafalt", {}))
    assert declined.message is not None
    assert detect(declined.message, root=declined.root).marked
    strict = Matcher(MatcherConfig(negations=("frafalt",)))
    assert not detect(declined.message, strict, root=declined.root).marked


def test_model_places_without_the_document_agree() -> None:
    """A message read without its document (its typed model only) is judged the same for the
    places the model holds."""
    for place, text, marked in (("dlg11-text", "Pakkeforløp hjem", True), ("epi-comment", "Ikke aktuelt for "
                                "Pakkeforløp hjem", False), ("dlg11-tema", "Pakkforløp heim", True)):  # fmt: skip
        verdict = examine(build(place, text, {}))
        assert verdict.message is not None
        assert analyse(verdict.message).detection.marked is marked


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=300),
       st.sampled_from(["dlg11-text", "dlg10-text", "epi-comment", "dlg11-tema"]))  # fmt: skip
def test_any_text_never_raises(text: str, place: str) -> None:
    """Hostile text in a free-text place: examine and decide end in a decision, never raise."""
    demo = load(DEMO)
    cleaned = "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 0x20)
    for candidate in (cleaned, "Pakkeforløp hjem. Diagnosedato: " + cleaned, cleaned + " Pakkeforløp hjem"):
        verdict = examine(build(place, candidate, {}), "fuzz")
        if verdict.message is not None and not verdict.salvaged:
            decide(verdict, demo, None).as_dict()


def test_hostile_repetition_is_read_in_bounded_windows() -> None:
    """An attack: one «sentence» of thousands of phrases, negations and dates without a full
    stop. Each rule reads a bounded window around what it found and a bounded number of
    findings, so the cost does not grow with the square of the text."""
    from pfhjem_msg.pathway.facts import MAX_READ, diagnosis_date_in
    from pfhjem_msg.pathway.marking import MAX_HITS
    from pfhjem_msg.pathway.places import Place
    from pfhjem_msg.pathway.text import WINDOW

    matcher = Matcher()
    hits = list(matcher.find("/t", "ikke inkludert i Pakkeforløp hjem, " * 5_000))
    assert len(hits) == MAX_HITS and all(h.negated_by == "ikke" for h in hits)
    assert all(len(h.negation_clause or "") <= 2 * WINDOW for h in hits)
    dates = diagnosis_date_in([(Place("/t"), "diagnosedato 31.02.2026 " * 5_000)], None)
    assert dates.found is None and len(dates.notes) == MAX_READ
