"""The marking «Pakkeforløp hjem» in one piece of text, as people really type it, and whether
the sender negates it.

The pathway's two words are matched word by word, each within one edit (a typo, a lost or
doubled letter, two letters swapped), after the repairs in ``text``: «Pakkforløp»,
«Pakkeforlöp», «Pakkeforloep», «Pakkeforløphjem» and «Pakkeforløpet heim» are the marking, and
so is the clinicians' abbreviation «pkf.»/«pkf» for «pakkeforløp» («inkl. i pkf. hjem»).
The second word must follow the first on the same line, with only spaces or dashes between;
across a line break only when the full name goes on («… for pasienter med kreft») or the
second word is written in lower case, so «pakkeforløp\\nHjem, Kari» (a surname) is not. A
«pakkeforløp» followed by anything else («for lungekreft», «kreft», «for hjerneslag») is a
diagnostic pathway.

Negation has a scope. A negation cue counts when it is in the clause that holds the phrase:
before it («ikke inkludert i …», «verken … eller …», «uten … »), or after it in the same clause
(«… er ikke startet», «…: Ikke aktuelt», «… – Nei», «… avslått av pasienten»), or in a «men»
clause or comma-separated value right after it that declines the offer («…, men pasienten
takket nei», «…, ikke aktuelt»). A cue in a coordinated, different clause («har ikke fastlege,
og er inkludert i …») or in a relative or subordinate clause («… som ikke har fastlege»,
«… fordi hun ikke har pårørende») does not negate the marking.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from pfhjem_msg.pathway.text import clause_bounds, clean, clean_cased, normalise, sentence_of

# ---------------------------------------------------------------------------------------------
# Tolerant word matching


def within_one_edit(word: str, target: str) -> bool:
    """Damerau–Levenshtein distance of at most one (one substitution, insertion, deletion or
    swap of two neighbours)."""
    if word == target:
        return True
    lw, lt = len(word), len(target)
    if abs(lw - lt) > 1:
        return False
    i = 0
    while i < min(lw, lt) and word[i] == target[i]:
        i += 1
    if lw == lt:
        if word[i + 1 :] == target[i + 1 :]:
            return True
        return (
            i + 1 < lw
            and word[i] == target[i + 1]
            and word[i + 1] == target[i]
            and word[i + 2 :] == target[i + 2 :]
        )
    if lw > lt:
        return word[i + 1 :] == target[i:]
    return word[i:] == target[i + 1 :]


def _fold(word: str) -> str:
    return word.replace("ö", "ø").replace("oe", "ø").replace("ó", "ø").replace("õ", "ø")


_FIRST = ("pakkeforløp", "pakkeforlop", "pakkeforløpet", "pakkeforlopet")
_SECOND = ("hjem", "heim")


def is_first_word(word: str) -> bool:
    if not 9 <= len(word) <= 15:
        return False
    w = _fold(word)
    return any(within_one_edit(w, t) for t in _FIRST)


def is_second_word(word: str) -> bool:
    if not 3 <= len(word) <= 5 or word[0] != "h":
        return False
    return any(within_one_edit(word, t) for t in _SECOND)


def _glued(word: str) -> bool:
    """«Pakkeforløphjem»: both words with the space missing."""
    if len(word) < 13:
        return False
    for cut in range(len(word) - 5, len(word) - 2):
        head, tail = word[:cut], word[cut:]
        if tail in _SECOND and is_first_word(head):
            return True
    return False


MAX_HITS = 20
"""Markings read per text, at most: the first un-negated one is what counts."""
_CANDIDATE = re.compile(r"(?<![^\W\d_])[^\W\d_]*?(?:pakk|forl)[^\W\d_]*|(?<!\w)pkf(?!\w)")
_WORD = re.compile(r"[^\W\d_]+")
_GAP = re.compile(r"[ \t\-\u2010-\u2015_/:]*(\n[\s\-\u2010-\u2015]*)?")
_NAME_GOES_ON = re.compile(
    r"[ \t\n]*(?:[\-\u2010-\u2015:,][ \t\n]*kreft\b|for[ \t\n]+(?:pasient(?:er|ar)[ \t\n]+med[ \t\n]+kreft"
    r"|kreftpasient(?:er|ar))\b)"
)
_GOING_HOME = re.compile(r"[ \t]+(?:att|igjen|(?P<to>til|fra|frå)[ \t]+(?P<what>\w+))\b")
_HOME_WORDS = frozenset({"seg", "sin", "sitt", "sine", "familien", "familia", "ektefellen", "mannen", "kona"})


def _going_home(low: str, shown: str | None, at: int) -> bool:
    """«… pakkeforløp hjem til Bodø», «… heim att»: «hjem» is where the patient goes, not the
    pathway's name. «til kommunene», «til pasienter med kreft» are the name going on."""
    m = _GOING_HOME.match(low, at)
    if m is None:
        return False
    if m.group("to") is None:
        return True
    if m.group("what") in _HOME_WORDS:
        return True
    start = m.start("what")
    return shown is not None and len(shown) == len(low) and shown[start].isupper()


_RULES = (
    ("full", re.compile(r"[ \t\n]*for[ \t\n]+pasient(?:er|ar)[ \t\n]+med[ \t\n]+kreft\b")),
    ("kreftpasienter", re.compile(r"[ \t\n]*for[ \t\n]+kreftpasient(?:er|ar)\b")),
    ("kreft", re.compile(r"[ \t]*[\-\u2010-\u2015:,][ \t]*kreft\b")),
)


@dataclass(frozen=True)
class Hit:
    start: int
    end: int
    rule: str


_ABBREVIATED = ("pakkeforl", "pkf")
"""«Pakkeforl. hjem», «pkf. hjem», «pkf hjem»: «pakkeforløp» as it is shortened in notes."""


def _abbreviated(word: str, low: str, end: int) -> bool:
    return word == "pkf" or (word == "pakkeforl" and low.startswith(".", end))


def find_phrases(low: str, shown: str | None = None) -> Iterator[Hit]:
    """Every «pakkeforløp hjem» in normalised text (``shown``: the same text before lower-casing,
    to tell «hjem» from the surname «Hjem» after a line break)."""
    for m in _CANDIDATE.finditer(low):
        word = m.group(0)
        end = m.end()
        if _glued(word):
            pass
        elif is_first_word(word) or _abbreviated(word, low, end):
            gap = _GAP.match(low, end + (word in _ABBREVIATED and low.startswith(".", end)))
            assert gap is not None
            nxt = _WORD.match(low, gap.end())
            if nxt is None or not is_second_word(nxt.group(0)):
                continue
            across_lines = gap.group(1) is not None and not _NAME_GOES_ON.match(low, nxt.end())
            if across_lines and (shown is None or len(shown) != len(low) or shown[nxt.start()].isupper()):
                continue
            if _going_home(low, shown, nxt.end()):
                continue
            end = nxt.end()
        else:
            continue
        rule = "short"
        for name, rx in _RULES:
            tail = rx.match(low, end)
            if tail:
                rule, end = name, tail.end()
                break
        yield Hit(m.start(), end, rule)


def mentions_diagnostic_pathway(low: str) -> bool:
    """A «pakkeforløp» that is not «pakkeforløp hjem»."""
    return any(is_first_word(m.group(0)) for m in _CANDIDATE.finditer(low))


# ---------------------------------------------------------------------------------------------
# Negation

DEFAULT_NEGATIONS = (
    "ikke", "ikkje", "ingen", "inga", "uten", "utan", "aldri", "verken", "hverken", "korkje", "kverken",
    "avslått", "avslo", "avslår", "avslag", "takket nei", "takka nei", "sagt nei", "svart nei", "reservert",
    "reserverer", "ønsker ikke", "ønskjer ikkje", "ikke aktuell", "ikkje aktuell", "ikke aktuelt",
    "ikkje aktuelt", "ikke lenger", "ikkje lenger", "utgår", "unntatt", "ekskludert", "nei",
)  # fmt: skip
"""Cues before the phrase in its clause; «uten»/«utan»/«ingen» only a few words before it."""

_AFTER = (
    "ikke", "ikkje", "aldri", "nei", "avslått", "avslo", "avslår", "avslag", "takket nei", "takka nei",
    "sagt nei", "svart nei", "reservert", "reserverte", "ikke aktuelt", "ikkje aktuelt", "utgår",
)  # fmt: skip
"""Cues after the phrase in its own clause («… er ikke startet», «…: Nei», «… avslått»)."""

_DECLINE = (
    "takket nei", "takka nei", "sagt nei", "svart nei", "avslått", "avslo", "avslår", "avslag", "reservert",
    "reserverte", "ikke aktuelt", "ikkje aktuelt", "ikke aktuell", "ikkje aktuell", "nei",
    "ønsker ikke dette", "ønsker ikke det", "ønskjer ikkje dette", "ønskjer ikkje det", "ønsker ikke tilbudet",
    "ønskjer ikkje tilbodet", "ønsker ikke å delta", "ønskjer ikkje å delta", "vil ikke delta",
    "vil ikkje delta", "vil ikke være med", "vil ikkje vere med", "ikke startet", "ikkje starta",
    "ikke inkludert", "ikkje inkludert", "ikke ønsket", "ikkje ønskt", "trakk seg", "trekt seg",
    "ikke relevant", "ikkje relevant", "ikke tilbudt", "ikkje tilbode", "ikke påbegynt", "ikke igangsatt",
    "ikkje sett i gang", "ikke gjennomført", "ikkje gjennomført", "ikke startet opp", "ikkje starta opp",
    "ikke rel", "ikkje rel", "ikke akt", "ikkje akt",
)  # fmt: skip
"""Cues in a «men» clause or a comma value right after the phrase: the offer declined (also
abbreviated: «ikke rel.», «ikke akt.»)."""

_NEAR_ONLY = frozenset({"uten", "utan", "ingen", "inga", "nei"})
_RELATIVE = re.compile(r"\b(?:som|der|dersom|hvis|viss)\s+(?:\w+\s+){0,2}$")
"""A relative or conditional clause whose own negation does not reach the phrase."""
_STOP_AFTER = re.compile(r"\b(?:som|fordi|sidan|siden|ettersom|dersom|hvis|når|der)\b")


def _cue_regex(words: tuple[str, ...]) -> re.Pattern[str]:
    ordered = sorted({normalise(w).strip() for w in words if w.strip()}, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(w) for w in ordered) + r")(?!\w)")


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
    negation_clause: str | None = None
    """The clause the negation applied to (shown by ``explain``, never logged)."""

    def as_dict(self) -> dict[str, str]:
        out = {"where": self.where, "text": self.text, "rule": self.rule}
        if self.negated_by:
            out["negated_by"] = self.negated_by
            out["negation_clause"] = self.negation_clause or ""
        return out


@dataclass
class Detection:
    marked: bool
    matches: list[Match] = field(default_factory=list)
    negated: list[Match] = field(default_factory=list)
    not_marked_reason: str | None = None


_SEP = r"[\s\-\u2010-\u2015_/]+"


def _tolerant(phrase: str) -> str:
    """A regex for an operator's phrase written with any separators and any spelling of ø."""
    words = normalise(phrase).replace("–", " ").replace("-", " ").split()
    o_slash = r"(?:ø|o|oe|ö)"
    return _SEP.join("".join(o_slash if ch == "ø" else re.escape(ch) for ch in w) for w in words)


class Matcher:
    def __init__(self, config: MatcherConfig | None = None) -> None:
        config = config or MatcherConfig()
        self.local = [
            (f"local:{i + 1}", re.compile(r"(?<!\w)" + _tolerant(p) + r"(?!\w)"))
            for i, p in enumerate(config.phrases)
            if p.strip()
        ]
        self.before = _cue_regex(DEFAULT_NEGATIONS + config.negations)
        self.after = _cue_regex(_AFTER + config.negations)
        self.decline = _cue_regex(_DECLINE + config.negations)

    def find(self, where: object, raw: str) -> Iterator[Match]:
        """Every non-overlapping marking in one piece of text."""
        low = clean(raw)
        hits: list[Hit] = []
        if "pakk" in low or "forl" in low or "pkf" in low:
            shown = clean_cased(raw) if "\n" in low or " til " in low or " fr" in low else None
            hits = list(itertools.islice(find_phrases(low, shown), MAX_HITS))
        for name, rx in self.local:
            for m in rx.finditer(low):
                if not any(m.start() < h.end and h.start < m.end() for h in hits):
                    hits.append(Hit(m.start(), m.end(), name))
        if not hits:
            return
        cased = clean_cased(raw)
        if len(cased) != len(low):
            cased = low
        for h in hits:
            cue, clause = self.negation(low, h.start, h.end)
            yield Match(str(where), _mask(cased[h.start : h.end]), h.rule, cue, clause)

    def negation(self, low: str, start: int, end: int) -> tuple[str | None, str | None]:
        """The cue that negates the phrase at ``start:end``, and its clause; or (None, None)."""
        sentence = sentence_of(low, start)
        c_start, c_end = clause_bounds(low, sentence, start)
        # «verken/hverken … eller …»: the cue spans coordination inside the sentence.
        before_sentence = low[sentence.start : start]
        m = re.search(r"\b(?:verken|hverken|korkje|kverken)\b[^.;\n]*\beller\b", before_sentence)
        if m:
            return m.group(0).split()[0], _mask(low[sentence.start : min(sentence.end, end)].strip())
        pre = low[c_start:start]
        # A bare comma ends a clause, unless what follows it continues the clause («…, å bli
        # inkludert …») or what it closes is an inserted phrase («ikke, etter samtale med lege, …»).
        parts = pre.split(",")
        last = idx = len(parts) - 1
        pre = parts[idx]
        while idx > 0 and (
            _continues(parts[idx])
            or _parenthetical(parts[idx - 1])
            or (idx < last and _parenthetical(parts[idx]))
        ):
            idx -= 1
            pre = parts[idx] + "," + pre
        cues = list(self.before.finditer(pre))
        if cues:
            cue = cues[-1]
            between = pre[cue.end() :]
            words_between = len(between.split())
            relative = _RELATIVE.search(pre[: cue.start()])
            if (
                not relative
                and (cue.group(0) not in _NEAR_ONLY or words_between <= 4)
                and words_between <= 14
                and not _CONTINUATION.match(between)
                and not _ACCEPTED_AFTER.match(low, end, sentence.end)
            ):
                return cue.group(0), _mask(low[start - len(pre) : min(c_end, end)].strip())
        post = low[end:c_end]
        field = _FIELD_SEPARATOR.match(post)
        if field:
            # «Pakkeforløp hjem: Ikke aktuelt» / «… – Nei»: a field's value negates only when it
            # is the negation itself; «…: Ønsker ikke kontakt nå» is a statement of its own.
            value = self.decline.search(post.split(",")[0], field.end()) or _ELLIPTIC_DECLINE.match(
                post, field.end()
            )
            if value:
                return value.group("cue") if value.re is _ELLIPTIC_DECLINE else value.group(0), _mask(
                    low[start : end + value.end()].strip()
                )
        else:
            stop = _STOP_AFTER.search(post)
            own = post[: stop.start()] if stop else post
            own_first = own.split(",")[0]
            cue_after = self.after.search(own_first)
            if cue_after:
                return cue_after.group(0), _mask(low[start : end + cue_after.end()].strip())
        if self._phrase_ends_sentence(low, end, sentence.end):
            # A heading with fields under it: «Pakkeforløp hjem:\n- Inkludert: nei».
            below = _FIELD_NO.search(low, sentence.end, sentence.end + 240)
            if below:
                return below.group("cue"), _mask((low[start:end] + " … " + below.group(0)).strip())
        # «…, ikke aktuelt» / «…, men pasienten takket nei»: the value or contrast right after.
        rest = low[end : sentence.end]
        value = re.match(r"\s*[,(]\s*", rest)
        if value:
            tail = rest[value.end() :]
            head = re.split(r"[,)]", tail, maxsplit=1)[0]
            lead = self.decline.match(head)
            if lead:
                return lead.group(0), _mask((low[start:end] + rest[: value.end() + lead.end()]).strip())
        contrast = re.match(r"[^.;\n]*?(?:,\s*|\s)(?:men|mens)\s", rest)
        if contrast:
            tail = rest[contrast.end() :]
            head = re.split(r",\s*(?:og|men)\b|\sog\s", tail, maxsplit=1)[0]
            found = self.decline.search(head) or _CONTRAST_NOT.match(head)
            if found:
                return found.group(0), _mask((low[start:end] + rest[: contrast.end() + found.end()]).strip())
        # «… drøftet med pasienten, som ikke ønsker å delta»: a decline of the offer itself,
        # anywhere later in the sentence.
        declined = _DECLINES_OFFER.search(low, end, sentence.end)
        if declined:
            return declined.group("cue"), _mask(low[start : declined.end()].strip())
        following = low[sentence.end : sentence.end + 160]
        # «Aktuell for Pakkeforløp hjem? Nei.»: a question answered in the next sentence.
        if following.startswith("?") and self._phrase_ends_sentence(low, end, sentence.end):
            reply = _ANSWER_NO.match(following.lstrip(" ?\n"))
            if reply:
                return reply.group(1), _mask((low[start : sentence.end] + "? " + reply.group(0)).strip())
        # «Vi har snakket om Pakkeforløp hjem. Han vil ikke delta.»: the next sentence declines.
        answer = _NEXT_DECLINE.match(following.lstrip(" .!?\n;"))
        if answer and self._phrase_ends_sentence(low, end, sentence.end):
            return answer.group("cue"), _mask((low[start : sentence.end] + ". " + answer.group(0)).strip())
        return None, None

    @staticmethod
    def _phrase_ends_sentence(low: str, end: int, sentence_end: int) -> bool:
        return len(low[end:sentence_end].split()) <= 3


_OFFER = (
    r"(?:\s+(?:til|på|om)\s+(?:dette|det|tilbudet|tilbodet|forløpet|pakkeforløpet|deltakelse|deltaking))?"
)
_DECLINES_OFFER = re.compile(
    r"(?<!\w)(?P<cue>takket nei|takka nei|takker nei|takkar nei|sa nei|sagt nei|svarte nei|svara nei"
    r"|(?:ikke|ikkje) (?:ønsker|ønskjer|vil|ønsket|ønskte) (?:å delta|å vere med|å være med|dette|det|tilbudet|tilbodet)"
    r"|(?:ønsker|ønskjer|vil|ønsket|ønskte) (?:ikke|ikkje) (?:å delta|å vere med|å være med|dette|det|tilbudet|tilbodet|delta)"
    r"|avslo|avslått|avslår|reserverte seg|reservert seg)" + _OFFER + r"(?=\s*(?:[,.;!?\n)]|$|og\b|men\b))"
)
"""A decline of the offer: with no object, or with the offer as its object («takket nei til
dette»), so «takket nei til hjemmesykepleie» is not one."""
_CONTRAST_NOT = re.compile(
    r"(?:ikke|ikkje)\s+(?:\w+\s+)?(?:gjennomført|gjennomført|startet|starta|igangsatt|påbegynt|aktuelt|aktuell"
    r"|inkludert|ønsket|ønskt)\b"
)
"""«…, men ikke gjennomført»: a «men» clause that is only the negation of the offer."""
_FIELD_SEPARATOR = re.compile(r"\s*(?::|\s[\-\u2010-\u2015]|[\u2013\u2014])\s*")
_FIELD_NO = re.compile(
    r"(?m)^[\s\-*•]*(?:inkludert|inkludering|inklusjon|aktuell|aktuelt|ønsker|ønskjer|ønsket|samtykke|samtykker"
    r"|deltar|deltek|deltakelse|deltaking|takket ja|takka ja|startet|starta)\s*[:=]\s*(?P<cue>nei|ikke aktuelt"
    r"|ikkje aktuelt|avslått)\b"
)
"""A field under a heading that says no to the pathway the heading names."""
_ANSWER_NO = re.compile(r"(nei|ikke aktuelt|ikkje aktuelt|ikke aktuell|ikkje aktuell)\b")

_NEXT_DECLINE = re.compile(
    r"(?:\w+\s+){0,2}(?P<cue>takket nei|takka nei|sa nei|sagt nei|vil ikke delta|vil ikkje delta|vil ikke være med"
    r"|vil ikkje vere med|ønsker ikke dette|ønsker ikke det|ønsker ikke å delta|ønskjer ikkje dette"
    r"|ønskjer ikkje det|ønskjer ikkje å delta|avslo dette|avslo det|avslo tilbudet|avslo tilbodet|takker nei"
    r"|takkar nei|ønsker det ikke|ønsker dette ikke|vil det ikke|ønskjer det ikkje|ønskjer dette ikkje|vil det ikkje"
    r"|ønsket det ikke|ønskte det ikkje)(?:\s+til\s+(?:dette|det|tilbudet|tilbodet|forløpet|pakkeforløpet))?"
    r"(?:\s+(?:nå|no|i dag|foreløpig))?\s*(?=[,.;!\n]|$)"
)


_CONTINUATION = re.compile(
    r"\s*(?:\w+\s+)?(?:videre|vidare|mer|meir)\s+(?:oppfølging\w*|kontakt|samtale\w*|deltakelse|deltaking)\s"
)
"""«ønsker ikke videre oppfølging i Pakkeforløp hjem»: the negation is of going on, which says
the patient is in the pathway (the message is then about its end, not a refusal)."""
_ACCEPTED_AFTER = re.compile(
    r"[^.;\n]*?,?\s(?:men|mens)\s+(?:\w+\s+){0,2}(?:ønsket|ønsker|ønskte|ønskjer|ville|vil)\s+(?:likevel\s+|gjerne\s+)?"
    r"(?:å\s+)?(?:delta|være\s+med|vere\s+med)|[^.;\n]*?,?\s(?:men|mens)\s+(?:\w+\s+){0,2}(?:takket|takka|takker|takkar)"
    r"\s+ja|[^.;\n]*?,?\s(?:men|mens)\s+(?:\w+\s+){0,2}(?:samtykket|samtykka|samtykker|samtykkjer)"
)
"""«ikke X …, men ønsket å delta»: the «men» clause says yes to the pathway, so the negation
before the phrase was about something else (being told of it, knowing of it)."""
_ELLIPTIC_DECLINE = re.compile(
    r"(?:\w+\.?\s+){0,2}?(?P<cue>(?:vil|ønsker|ønskjer|ønsket|ønskte|orker|orkar)\s+(?:ikke|ikkje))"
    r"(?:\s+(?:det|dette|nå|no|foreløpig|førebels|i\s+dag))*\s*(?=[.;!\n]|$)"
)
"""A field value that is a refusal with its object left out: «Pakkeforløp hjem: Pasienten vil
ikke.» — the object is the field's name. «…: Ønsker ikke kontakt nå» has its own object."""

_PARENTHESIS = re.compile(
    r"^\s*(?:etter|i|på|ved|under|grunnet|pga|på grunn av|som|jf|iflg|ifølge|trass|tross|også|dessverre"
    r"|foreløpig|førebels|per i dag|enn så lenge|slik|i samråd|etter samtale|etter eget)\b[^,]*$"
)


def _parenthetical(segment: str) -> bool:
    """Whether the comma-separated piece is an inserted phrase («, etter samtale med lege,»)."""
    return bool(_PARENTHESIS.match(segment))


def _continues(segment: str) -> bool:
    """Whether the piece after a comma goes on with the clause before it (an infinitive)."""
    return segment.lstrip().startswith(("å ", "og å ", "eller å "))


def _mask(text: str) -> str:
    """Digits that could be an id are masked all the same."""
    return re.sub(r"\d{5,}", lambda m: "#" * len(m.group(0)), text)
