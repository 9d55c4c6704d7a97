"""What every pathway rule reads: a sender's free text, repaired and with quoted earlier
messages removed, cut into clauses.

Repairs, in order: character references left as text by double escaping («Pakkeforl&oslash;p»,
«&#248;»), mojibake (UTF-8 read as Latin-1 or Windows-1252, up to three times), Unicode
NFKC (full-width letters, ligatures, no-break spaces), invisible characters inside words (soft
hyphen, zero-width space and joiners, BOM), the replacement character and a «?» inside a word
(most often a lost «ø»), and «pakke-forløp»/«pakke forløp» written as two words. Case is
lowered; line breaks are kept, since they end clauses and quoted lines.
"""

from __future__ import annotations

import bisect
import functools
import html
import re
import unicodedata
from dataclasses import dataclass

_INVISIBLE = "\u00ad\u200b\u200c\u200d\u2060\ufeff\u180e"
_MOJIBAKE_HINT = re.compile("[\u00c2\u00c3\u00c5][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]")  # fmt: skip
_MOJIBAKE_RUN = re.compile(
    "[\u0080-\u00ff\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014"
    "\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]{2,}"
)
_SPACES = re.compile(r"[ \t\f\v]+")
_LOST_LETTER = re.compile(r"(?<=\w)(?:\ufffd|\?)(?=\w)")
_SPLIT_COMPOUND = re.compile(r"pakke[ \-\u2010\u2011]+forl", re.IGNORECASE)
_HYPHENATED = re.compile(
    r"(pakk[a-zæøåö]{0,6})[\-\u2010\u2011][ \t]*\n?[ \t]*([a-zæøåö]{1,8}p(?:et)?)\b", re.IGNORECASE
)
"""«Pakkefor-løp»: the word broken by a hyphen (at a line end, or by hand)."""


def _as_bytes(run: str) -> bytes | None:
    """The bytes a run of characters was decoded from, under Windows-1252 or Latin-1."""
    out = bytearray()
    for ch in run:
        try:
            out += ch.encode("cp1252")
        except UnicodeEncodeError:
            if ord(ch) > 0xFF:
                return None
            out.append(ord(ch))
    return bytes(out)


def _redecode(match: re.Match[str]) -> str:
    run = match.group(0)
    raw = _as_bytes(run)
    if raw is None:
        return run
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return run


def repair_mojibake(text: str) -> str:
    """UTF-8 that was decoded as Latin-1 (or Windows-1252) up to three times (each system on the
    way can do it once), decoded right. Only
    runs that decode as valid UTF-8 change, so a correctly written «ø» or «å» stays."""
    for _ in range(3):
        if not _MOJIBAKE_HINT.search(text):
            break
        text = _MOJIBAKE_RUN.sub(_redecode, text)
    return text


def repaired(text: str) -> str:
    """The repairs of this module, case kept; one kind of space, line breaks kept. Each repair
    is tried only when a cheap test says it may apply: most text needs none."""
    if "&" in text and ";" in text:
        text = _REFERENCE.sub(_unreference, text)
    if "\u00c3" in text or "\u00c2" in text or "\u00c5" in text:
        text = repair_mojibake(text)
    if not text.isascii():
        for ch in _INVISIBLE:
            if ch in text:
                text = text.replace(ch, "")
        text = unicodedata.normalize("NFKC", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "?" in text or "\ufffd" in text:
        text = _LOST_LETTER.sub("ø", text)
    if "  " in text or "\t" in text or "\f" in text or "\v" in text:
        text = _SPACES.sub(" ", text)
    if "akke " in text or "akke-" in text or "AKKE " in text or "AKKE-" in text:
        text = _SPLIT_COMPOUND.sub(lambda m: m.group(0)[:5] + m.group(0)[-4:], text)
    if ("-" in text or "\u2010" in text or "\u2011" in text) and ("akk" in text or "AKK" in text):
        text = _HYPHENATED.sub(_join_hyphenated, text)
    return text


_REFERENCE = re.compile(r"&(?:#[0-9]{2,5}|#[xX][0-9a-fA-F]{2,4}|[a-zA-Z]{2,8});")
"""A character reference the sender's system escaped twice, so it reached us as text."""


def _unreference(m: re.Match[str]) -> str:
    ch = html.unescape(m.group(0))
    return m.group(0) if ch == m.group(0) or len(ch) != 1 or not ch.isprintable() else ch


def _join_hyphenated(m: re.Match[str]) -> str:
    joined = m.group(1) + m.group(2)
    return joined if 9 <= len(joined) <= 15 else m.group(0)


def normalise(text: str) -> str:
    """The repaired text in lower case."""
    return repaired(text).lower()


# ---------------------------------------------------------------------------------------------
# Quoted earlier messages

_FORWARD = re.compile(
    r"^[ \t]*(?:-{2,}|_{2,}|={2,})?[ \t]*(?:opprinnelig melding|opphavleg melding|original message"
    r"|videresendt melding|vidaresendt melding|forwarded message|begin forwarded message)\b",
    re.IGNORECASE | re.MULTILINE,
)
_WROTE = re.compile(
    r"^[^\n]{0,160}\b(?:skrev|skreiv|wrote)\b[^\n]{0,80}:[ \t]*$", re.IGNORECASE | re.MULTILINE
)
_HEADER_FROM = re.compile(r"^[ \t]*(?:fra|frå|from)[ \t]*:", re.IGNORECASE | re.MULTILINE)
_HEADER_FIELD = re.compile(
    r"^[ \t]*(?:sendt|send|sent|dato|date|til|to|emne|subject|kopi|cc)[ \t]*:", re.IGNORECASE
)


def unquoted(text: str) -> str:
    """The text without quoted earlier messages: lines that start with «>», and everything from
    a forwarding line («-----Opprinnelig melding-----», «Original message»), a «… skrev:» line
    or a «Fra: / Sendt: / Til: / Emne:» header block (bokmål, nynorsk or English) on."""
    cut = len(text)
    folded = text.lower()
    if "melding" in folded or "message" in folded:
        m = _FORWARD.search(text)
        if m:
            cut = min(cut, m.start())
    if "skrev" in folded or "skreiv" in folded or "wrote" in folded:
        m = _WROTE.search(text)
        if m:
            cut = min(cut, m.start())
    if ":" in text and ("fra" in folded or "frå" in folded or "from" in folded):
        for m in _HEADER_FROM.finditer(text):
            following = text[m.end() :].split("\n", 4)[1:4]
            if any(_HEADER_FIELD.match(line) for line in following):
                cut = min(cut, m.start())
                break
    text = text[:cut]
    if ">" not in text:
        return text
    return "\n".join(line for line in text.split("\n") if not line.lstrip().startswith(">"))


@functools.lru_cache(maxsize=1024)
def clean(text: str) -> str:
    """What every rule reads: the unquoted text, normalised. Cached because each place is read
    by several rules (marking, contact point, diagnosis date, lifecycle)."""
    return normalise(unquoted(text))


@functools.lru_cache(maxsize=256)
def clean_cased(text: str) -> str:
    """``clean`` before lower-casing: to tell «hjem» from the surname «Hjem»."""
    return repaired(unquoted(text))


# ---------------------------------------------------------------------------------------------
# Sentences and clauses

_ABBREVIATIONS = (
    "ca", "pas", "pt", "bl.a", "f.eks", "dvs", "mht", "ang", "evt", "ev", "inkl", "nr", "kl", "tlf", "jf",
    "iflg", "ifb", "mnd", "md", "dr", "st", "spl", "kr", "vedr", "avd", "obs", "etc", "osv", "o.l", "m.m",
    "t.o.m", "f.o.m", "p.t", "mv", "gr", "stk", "min", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
    "sep", "sept", "okt", "nov", "des", "ref",
)  # fmt: skip
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|\n|;|•")
_ABBREV_BEFORE = re.compile(
    r"(?:^|[\s(])(?:" + "|".join(re.escape(a) for a in _ABBREVIATIONS) + r"|\d{1,2})$"
)


@dataclass(frozen=True)
class Span:
    start: int
    end: int


@functools.lru_cache(maxsize=256)
def sentences(text: str) -> tuple[Span, ...]:
    """Sentences and lines: ends at «. ! ?» before a space (not after a known abbreviation or
    a day number), at a line break, a semicolon or a bullet. Cached: every rule that finds
    something asks for the sentence around it."""
    out = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if m.group(0).startswith(".") and _ABBREV_BEFORE.search(text[max(0, m.start() - 8) : m.start()]):
            continue
        if m.start() > start:
            out.append(Span(start, m.start()))
        start = m.end()
    if start < len(text):
        out.append(Span(start, len(text)))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _starts(text: str) -> tuple[int, ...]:
    return tuple(span.start for span in sentences(text))


WINDOW = 600
"""How far from a phrase a rule reads, at most: no sentence a person writes is longer, and a
hostile text without full stops costs no more than a normal one."""


def sentence_of(text: str, position: int) -> Span:
    """The sentence around ``position``, clipped to ``WINDOW`` characters either side."""
    spans = sentences(text)
    i = bisect.bisect_right(_starts(text), position) - 1
    span = spans[i] if i >= 0 and position <= spans[i].end else Span(position, position)
    return Span(max(span.start, position - WINDOW), min(span.end, position + WINDOW))


_BOUNDARY = re.compile(
    r",\s*(?:og|men|mens|så|samt|for|fordi|da|når|der|sidan|siden)\b|\s(?:men|mens)\s|(?<!\d)\sog\s(?!(?:ikke|ikkje)\b|\d)"
)
"""Where a coordinated, different clause starts inside a sentence."""


def clause_bounds(text: str, span: Span, position: int) -> tuple[int, int]:
    """The clause of ``text`` inside the sentence ``span`` that holds ``position``: the stretch
    between coordinating boundaries («, og», «, men», « men », « og »)."""
    start, end = span.start, span.end
    for m in _BOUNDARY.finditer(text, span.start, span.end):
        if m.end() <= position:
            start = m.end()
        elif m.start() >= position:
            end = m.start()
            break
    return start, end
