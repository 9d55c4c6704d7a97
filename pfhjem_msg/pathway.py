"""Which messages are «Pakkeforløp hjem for pasienter med kreft», and what else they say.

No national code marks these messages: hospitals write the name as free text, in several
spellings, in different places. The detector normalises what bad encodings, markup and
typing do to the phrase, looks in every place a sender may put it, and explains each hit:
where, what was written, and which rule matched.

Rules, in order of specificity (the most specific one that matches is reported):
- ``full``: «Pakkeforløp hjem for pasienter med kreft» / «Pakkeforløp heim for pasientar med kreft»
- ``kreftpasienter``: «Pakkeforløp hjem for kreftpasienter» (the older working title)
- ``kreft``: «Pakkeforløp hjem – kreft»
- ``short``: «Pakkeforløp hjem» / «Pakkeforløp heim» alone
- ``local:<n>``: a phrase the operator added in ``[pathway] phrases``

Not marked:
- the diagnostic cancer pathways («pakkeforløp for lungekreft», «pakkeforløp kreft»,
  forløpskoder A01 …): the word «pakkeforløp» without «hjem»/«heim» right after it;
- a phrase the sender negates in the same clause («ikke inkludert i Pakkeforløp hjem»,
  «ikkje aktuelt for pakkeforløp heim»);
- the phrase inside a quoted earlier message. The rule: in a reply, the request an answer
  embeds (``Notat/Foresporsel``) is the earlier message and is not read; in any free text,
  lines that start with ``>`` and everything after a forwarding header («-----Opprinnelig
  melding-----», «Original message», «… skrev:») are quoted and not read.
"""

from __future__ import annotations

import calendar
import functools
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date

from pfhjem_msg.kith.model import DialogPayload, EpikrisePayload, Message

# ---------------------------------------------------------------------------------------------
# Normalisation

_MOJIBAKE = {
    "Ã¸": "ø", "Ã˜": "Ø", "Ã¥": "å", "Ã…": "Å", "Ã¦": "æ", "Ã†": "Æ", "Ã¶": "ö",
    "Ã©": "é", "Â ": " ", "Â\u00a0": " ",
}  # fmt: skip
_SPACES = re.compile(r"[\s\u00a0\u2007\u202f\u200b]+")


def normalise(text: str) -> str:
    """Lower case, one kind of space, mojibake repaired; the length may change."""
    for bad, good in _MOJIBAKE.items():
        if bad in text:
            text = text.replace(bad, good)
    text = unicodedata.normalize("NFC", text)
    return _SPACES.sub(" ", text).casefold()


_SEP = r"[\s\-‐‑‒–—―_/]+"  # between words: spaces, line breaks, hyphens and dashes
_O_SLASH = r"(?:ø|o|oe|ö|�|\?|)"  # ø as written, as o/oe/ö, or lost to bad decoding


def _tolerant(phrase: str) -> str:
    """A regex for a phrase written with any separators and any spelling of ø."""
    words = normalise(phrase).replace("–", " ").replace("-", " ").split()
    parts = []
    for word in words:
        parts.append("".join(_O_SLASH if ch == "ø" else re.escape(ch) for ch in word))
    return _SEP.join(parts)


PAKKEFORLOP = r"pakkeforl" + _O_SLASH + r"p"
HJEM = r"(?:hjem|heim)"
BUILTIN_RULES: list[tuple[str, str]] = [
    (
        "full",
        PAKKEFORLOP
        + _SEP
        + HJEM
        + _SEP
        + r"for"
        + _SEP
        + r"pasient(?:er|ar)"
        + _SEP
        + r"med"
        + _SEP
        + r"kreft",
    ),
    ("kreftpasienter", PAKKEFORLOP + _SEP + HJEM + _SEP + r"for" + _SEP + r"kreftpasient(?:er|ar)"),
    ("kreft", PAKKEFORLOP + _SEP + HJEM + r"\s*[\-‐‑‒–—―:,]\s*kreft"),
    ("short", PAKKEFORLOP + _SEP + HJEM),
]
_DIAGNOSTIC = re.compile(PAKKEFORLOP + r"(?!" + _SEP + HJEM + r"\b)")

DEFAULT_NEGATIONS = (
    "ikke", "ikkje", "ingen", "uten", "utan", "avslått", "avslår", "avslo", "takket nei", "takka nei",
    "ønsker ikke", "ønskjer ikkje", "ikke aktuell", "ikkje aktuell", "ikke aktuelt", "ikkje aktuelt",
    "ikke lenger", "ikkje lenger", "avsluttet", "avslutta", "utgår",
)  # fmt: skip
_CLAUSE_END = re.compile(r"[.;:!?\n]|,|\bmen\b")
_QUOTE_HEADER = re.compile(
    r"^\s*(?:-{2,}\s*(?:opprinnelig melding|original message|videresendt melding|forwarded message)"
    r"|.{0,120}\b(?:skrev|wrote)\b.{0,80}:\s*$)",
    re.IGNORECASE | re.MULTILINE,
)


def unquoted(text: str) -> str:
    """The text without quoted earlier messages (see the module's rule)."""
    folded = text.casefold()
    if "--" in text or "skrev" in folded or "wrote" in folded:  # the header regex is costly
        text = _QUOTE_HEADER.split(text, maxsplit=1)[0]
    if ">" not in text:
        return text
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(">"))


@functools.lru_cache(maxsize=1024)
def clean(text: str) -> str:
    """What every rule reads: the unquoted text, normalised. Cached because each message's
    texts are read by several rules (marking, contact point, diagnosis date, contact)."""
    return normalise(unquoted(text))


# ---------------------------------------------------------------------------------------------
# The matcher


@dataclass(frozen=True)
class MatcherConfig:
    """``[pathway]`` in the configuration: local phrases and negation words to add."""

    phrases: tuple[str, ...] = ()
    negations: tuple[str, ...] = ()


@dataclass(frozen=True)
class Match:
    where: str
    """An XPath-like path to the element (or attribute) the text is in."""
    text: str
    """The matched words as the sender wrote them (only the phrase, never the context)."""
    rule: str
    negated_by: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {"where": self.where, "text": self.text, "rule": self.rule}


@dataclass
class Detection:
    marked: bool
    matches: list[Match] = field(default_factory=list)
    negated: list[Match] = field(default_factory=list)
    not_marked_reason: str | None = None


class Matcher:
    def __init__(self, config: MatcherConfig | None = None) -> None:
        config = config or MatcherConfig()
        rules = list(BUILTIN_RULES)
        rules += [(f"local:{i + 1}", _tolerant(p)) for i, p in enumerate(config.phrases)]
        # Most specific first; a word boundary after each so «hjemme…» is not «hjem».
        self.rules = [(name, re.compile(r"(?<!\w)" + rx + r"(?!\w)")) for name, rx in rules]
        words = sorted({normalise(w) for w in DEFAULT_NEGATIONS + config.negations}, key=len, reverse=True)
        self.negation = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in words) + r")(?!\w)")

    def find(self, where: str, raw: str) -> Iterator[Match]:
        """Every non-overlapping marking in one piece of text, most specific rule first."""
        text = clean(raw)
        stem = "pakkeforl" in text  # every built-in rule starts with it: most texts end here
        taken: list[tuple[int, int]] = []
        for name, rx in self.rules:
            if not stem and not name.startswith("local:"):
                continue
            for m in rx.finditer(text):
                if any(m.start() < end and start < m.end() for start, end in taken):
                    continue
                taken.append((m.start(), m.end()))
                yield Match(where, _mask(m.group(0)), name, self._negated(text, m.start()))

    def _negated(self, text: str, start: int) -> str | None:
        """A negation word in the same clause, shortly before the phrase."""
        before = text[max(0, start - 80) : start]
        clause = _CLAUSE_END.split(before)[-1]
        found = self.negation.findall(clause)
        return found[-1] if found else None

    def mentions_diagnostic_pathway(self, raw: str) -> bool:
        text = clean(raw)
        return "pakkeforl" in text and bool(_DIAGNOSTIC.search(text))


def _mask(text: str) -> str:
    """The phrase only; digits that could be an id are masked all the same."""
    return re.sub(r"\d{5,}", lambda m: "#" * len(m.group(0)), text)


def places(msg: Message) -> Iterator[tuple[str, str]]:
    """(where, text) of every place a sender may put the marking, quoted requests excluded."""
    for where, text in msg.document_descriptions:
        yield str(where), text
    payload = msg.payload
    if isinstance(payload, DialogPayload):
        for note in payload.notes:
            base = str(note.path)
            if note.tema:
                yield f"{base}/Tema", note.tema
            if note.tema_kodet and note.tema_kodet.text:
                yield f"{base}/TemaKodet/@DN", note.tema_kodet.text
            if note.text:
                yield f"{base}/TekstNotatInnhold", note.text
            if note.merknad:
                yield f"{base}/Merknad", note.merknad
        for req in payload.requests:
            base = str(req.path)
            if "/Notat" in base:  # the request an answer embeds: the earlier message
                continue
            if req.subject:
                yield f"{base}/EmneSporsmal", req.subject
            if req.text:
                yield f"{base}/Sporsmal", req.text
            if req.reason:
                yield f"{base}/Begrunnelse", req.reason
    elif isinstance(payload, EpikrisePayload):
        for comment in payload.comments:
            base = str(comment.path)
            if comment.heading and comment.heading.text:
                yield f"{base}/Heading/@DN", comment.heading.text
            if comment.text:
                yield f"{base}/TextResultValue", comment.text
        for where, code in payload.services:
            if code.text:
                yield f"{where}/@DN", code.text


def detect(msg: Message, matcher: Matcher | None = None) -> Detection:
    matcher = matcher or Matcher()
    if msg.is_apprec:
        return Detection(False, not_marked_reason="an AppRec is never a pathway message")
    found: list[Match] = []
    negated: list[Match] = []
    diagnostic = False
    for where, text in places(msg):
        for m in matcher.find(where, text):
            (negated if m.negated_by else found).append(m)
        diagnostic = diagnostic or matcher.mentions_diagnostic_pathway(text)
    if found:
        return Detection(True, found, negated)
    if negated:
        m = negated[0]
        reason = f"the sender negates the marking («{m.negated_by} … {m.text}» at {m.where})"
    elif diagnostic:
        reason = (
            "mentions a diagnostic cancer pathway («pakkeforløp» without «hjem»/«heim»), not Pakkeforløp hjem"
        )
    else:
        reason = "no marking «Pakkeforløp hjem» in any place a sender puts it"
    return Detection(False, [], negated, reason)


# ---------------------------------------------------------------------------------------------
# Contact point, diagnosis date, municipal contact

_CONTACT_POINT = re.compile(r"(?<!\w)(?:samhandlingspunkt|samhandlingspunktet|sp)\s*(?:nr\.?\s*)?([123])\b")
MONTHS = {
    "januar": 1, "jan": 1, "februar": 2, "feb": 2, "mars": 3, "mar": 3, "april": 4, "apr": 4,
    "mai": 5, "juni": 6, "jun": 6, "juli": 7, "jul": 7, "august": 8, "aug": 8, "september": 9,
    "sep": 9, "sept": 9, "oktober": 10, "okt": 10, "november": 11, "nov": 11, "desember": 12, "des": 12,
}  # fmt: skip
_DATE = (
    r"(?P<date>\d{4}-\d{1,2}-\d{1,2}"
    r"|\d{1,2}\.\s?\d{1,2}\.\s?\d{2,4}"
    r"|\d{1,2}/\d{1,2}[/-]\d{2,4}"
    r"|\d{1,2}\.?\s+(?:" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?\s+\d{4})"
)
_DIAGNOSIS_DATE = re.compile(
    r"(?:diagnosedato|diagnosedatoen|diagnose\s+stil(?:t|lt)|diagnosen\s+(?:ble|vart|vert)\s+stil(?:t|lt)"
    r"|diagnostisert|dato\s+for\s+diagnose|kreftdiagnose\s+stil(?:t|lt))"
    r"\s*(?:den|dato|:|,|-|–)?\s*(?:den\s+)?" + _DATE
)
_MUNICIPAL_CONTACT = re.compile(r"kontaktpunkt(?:et)?\s+i\s+kommunen\s*(?::|er|-|–)\s*\S")


def parse_norwegian_date(text: str) -> date | None:
    """dd.mm.yyyy, d.m.yy, yyyy-mm-dd, dd/mm/yyyy, «3. september 2026», «3 sep 2026»."""
    t = text.strip().lower()
    try:
        if re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}", t):
            y, m, d = (int(x) for x in t.split("-"))
            return date(y, m, d)
        m1 = re.fullmatch(r"(\d{1,2})[./]\s?(\d{1,2})[./-]\s?(\d{2,4})", t)
        if m1:
            d, m, y = int(m1.group(1)), int(m1.group(2)), int(m1.group(3))
            return date(y + 2000 if y < 100 else y, m, d)
        m2 = re.fullmatch(r"(\d{1,2})\.?\s+([a-zæøå]+)\.?\s+(\d{4})", t)
        if m2 and m2.group(2) in MONTHS:
            return date(int(m2.group(3)), MONTHS[m2.group(2)], int(m2.group(1)))
    except ValueError:
        return None
    return None


@dataclass(frozen=True)
class Found:
    value: object
    where: str
    how: str


def contact_point(msg: Message, texts: Iterable[tuple[str, str]]) -> Found:
    for where, text in texts:
        m = _CONTACT_POINT.search(clean(text))
        if m:
            return Found(int(m.group(1)), where, f"the text names samhandlingspunkt {m.group(1)}")
    return Found(1, "", "default: the first contact point, the needs assessment at the hospital")


def diagnosis_date(msg: Message, texts: Iterable[tuple[str, str]]) -> Found | None:
    """The diagnosis date: a dated main diagnosis in an Epikrise, else a date the text gives."""
    payload = msg.payload
    if isinstance(payload, EpikrisePayload):
        for kinds in (("H",), ("B",)):
            for diag in payload.diagnoses:
                if diag.kind in kinds and diag.date:
                    day = parse_norwegian_date(diag.date[:10])
                    if day:
                        return Found(
                            day, str(diag.path), f"the date of diagnosis {diag.code.value} ({diag.kind})"
                        )
    for where, text in texts:
        m = _DIAGNOSIS_DATE.search(clean(text))
        if m:
            day = parse_norwegian_date(m.group("date"))
            if day:
                return Found(day, where, "a diagnosis date in the text")
    return None


def municipal_contact(texts: Iterable[tuple[str, str]]) -> str | None:
    """Where the text names the patient's contact point in the municipality (the path only)."""
    for where, text in texts:
        if _MUNICIPAL_CONTACT.search(clean(text)):
            return where
    return None


# ---------------------------------------------------------------------------------------------
# Follow-up windows


def add_months(day: date, months: int) -> date:
    """Calendar months; the 31st becomes the last day of a shorter month."""
    total = day.year * 12 + day.month - 1 + months
    year, month = divmod(total, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


@dataclass(frozen=True)
class Window:
    point: int
    start: date
    end: date
    anchor: str
    """``diagnosis`` (the message gives the date) or ``estimated`` (the message date)."""

    def as_dict(self) -> dict[str, object]:
        return {
            "point": self.point,
            "window_start": self.start.isoformat(),
            "window_end": self.end.isoformat(),
            "anchor": self.anchor,
        }


def followup_windows(anchor_day: date, anchor: str) -> list[Window]:
    """SP2: 3–4 months after the anchor; SP3: 12–18 months after."""
    return [
        Window(2, add_months(anchor_day, 3), add_months(anchor_day, 4), anchor),
        Window(3, add_months(anchor_day, 12), add_months(anchor_day, 18), anchor),
    ]


@dataclass
class PathwayFacts:
    """Everything the pathway says about one message."""

    detection: Detection
    contact_point: Found
    diagnosis: Found | None
    municipal_contact_where: str | None
    followups: list[Window]


def analyse(msg: Message, matcher: Matcher | None = None) -> PathwayFacts:
    detection = detect(msg, matcher)
    texts = list(places(msg))
    point = contact_point(msg, texts)
    diagnosis = diagnosis_date(msg, texts)
    windows: list[Window] = []
    if detection.marked and point.value == 1:
        if diagnosis is not None:
            windows = followup_windows(diagnosis.value, "diagnosis")  # type: ignore[arg-type]
        elif msg.gen_datetime is not None:
            windows = followup_windows(msg.gen_datetime.date(), "estimated")
    return PathwayFacts(detection, point, diagnosis, municipal_contact(texts), windows)
