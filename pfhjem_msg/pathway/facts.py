"""What a marked message says beyond the marking: which contact point it is about, when the
diagnosis was made, and where it is in the pathway's life (start, follow-up, end, death).

Contact point. A mention of a point is either what this message is about («Samhandlingspunkt
2: kartlegging gjennomført», «SP3», «siste samhandlingspunkt», «3–4 måneder etter diagnose»)
or a plan for later («kommunen følger opp ved samhandlingspunkt 2 og 3», «ny kartlegging om
3–4 måneder»). A plan is told by words of the future or of another party's task in its clause
(«følger opp», «skal», «vil», «planlagt», «neste», «om … måneder», «innkalling»). The first
mention that is not a plan decides; none means point 1, the needs assessment.

Diagnosis date. A date counts when a diagnosis cue («diagnostisert», «diagnosedato», «diagnosen
ble stilt», «fikk diagnosen», «kreft påvist», «residiv diagnostisert», «Diagnosetidspunkt»)
is in its clause and no other date's cue (admission, discharge, surgery, control, letter,
birth, treatment start) stands between them. A date that cannot be one (31.02., year 9999,
before 1900 or more than a year after the message) is ignored with a note.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Literal

from pfhjem_msg.pathway.marking import find_phrases
from pfhjem_msg.pathway.text import clause_bounds, clean, sentence_of

MAX_READ = 50
"""Mentions of a point, dates or cues read per text, at most (a hostile text repeats them)."""


@dataclass(frozen=True)
class Found:
    value: object
    where: str
    how: str


# ---------------------------------------------------------------------------------------------
# Contact point

_NUMBER = {"1": 1, "2": 2, "3": 3, "i": 1, "ii": 2, "iii": 3, "en": 1, "ein": 1, "én": 1, "to": 2, "tre": 3}
_ORDINAL = {"første": 1, "fyrste": 1, "andre": 2, "annet": 2, "anna": 2, "tredje": 3, "siste": 3}
_POINT_WORD = r"samhandlings?\s?-?(?:punkt(?:et|a|er|ene)?|pkt\.?)|samh\.?\s?punkt|samhandlingspkt\.?"
_POINT = re.compile(
    r"(?<!\w)(?:(?:" + _POINT_WORD + r")\s*:?\s*(?:nr\.?\s*)?(?P<n>[123]|iii|ii|i|en|ein|én|to|tre)(?!\w)"
    r"(?:\s*(?:og|\+|,|/|-|–)\s*(?P<n2>[123])(?!\w))?"
    r"|sp\s?-?\s?(?P<sp>[123])(?![\w.,]\d)"
    r"|(?:det\s+|den\s+)?(?P<ord>første|fyrste|andre|tredje|siste)\s+(?:" + _POINT_WORD + r"))"
)
_MONTHS_AFTER = re.compile(
    r"(?<![\w.])(?P<lo>\d{1,2})(?:\s*(?:-|–|til)\s*(?P<hi>\d{1,2}))?\s*(?:måneder|månader|månedar|mnd\.?|md\.?)"
    r"(?P<tail>[^.;\n]{0,40})"
)
_YEARS_AFTER = re.compile(
    r"(?<!\w)(?:ett|eitt|et|eit|1|halvannet|halvanna|1,5)\s+år\s+(?:etter|sidan|siden|fra|frå)\s+(?:at\s+)?"
    r"(?:\w+\s+){0,3}?(?:\w*diagnos|påvis)"
)
"""«ett år etter diagnose», «ca. 1 år sidan ho fekk diagnosen»: the time of the last point."""
_ELLIPTIC_CLAUSE = re.compile(r"\s*(?:etter|ved|om|innen|innan|på|i)\s")
_JOINED_BY = re.compile(r"(?:,\s*|\s)(?:og|så|deretter|derette|etterpå)\s*$")
"""«…, og deretter ny samtale etter 3 mnd (SP2) og etter 12 mnd (SP3)»: a clause of only a time
phrase after «og», «så» or «deretter» has left its verb out; it is read with the clause it shares
that verb with."""
_PLAN = re.compile(
    r"(?<!\w)(?:følger\s+opp|følgjer\s+opp|følge\s+opp|følgje\s+opp|følges\s+opp|følgjast\s+opp|skal|vil|skulle"
    r"|bør|planlagt|planlegges|planleggjast|planlagd|neste|innkall\w*|kalles\s+inn|kallast\s+inn|tar\s+kontakt"
    r"|tek\s+kontakt|ta\s+kontakt|kontakter|kontaktar|videre\s+oppfølging|vidare\s+oppfølging|overtar|ansvar"
    r"|ansvaret|avtalt|avtale|forventet|venta|ventet|fremover|framover|etter\s+hvert|etter\s+kvart|seinare"
    r"|senere|om\s+\d|om\s+ca|om\s+cirka|om\s+omlag|innen|innan|ny\s+kartlegging|nytt\s+møte|ny\s+samtale"
    r"|gjennomføres\s+om|aktuelt\s+ved|tilbud\s+om|tilbod\s+om|vil\s+bli|blir\s+kontaktet|kommunen\s+tar"
    r"|innebærer|inneber|består\s+av|omfatter|omfattar|tilbys|tilbydast|får\s+tilbud|får\s+tilbod|informert\s+om"
    r"|orientert\s+om|forklart|kommer|kjem|kontaktes|kontaktast|varsles|varslast|innkalles|kalles|følges|deretter|derette|etterpå)(?!\w)"
)
_DONE = re.compile(
    r"(?<!\w)(?:gjennomført|gjennomførte|gjennomførd|utført|utførte|avholdt|fant\s+sted|rapport|referat"
    r"|oppsummering|samandrag|kartlagt)(?!\w)"
)


def _mentions(low: str) -> Iterable[tuple[int, int]]:
    """(position, point) of each mention of a contact point."""
    for m in _POINT.finditer(low):
        if m.group("n"):
            yield m.start(), _NUMBER[m.group("n")]
            if m.group("n2"):
                yield m.start(), int(m.group("n2"))
        elif m.group("sp"):
            yield m.start(), int(m.group("sp"))
        elif m.group("ord"):
            yield m.start(), _ORDINAL[m.group("ord")]
    for m in _MONTHS_AFTER.finditer(low):
        tail = m.group("tail")
        before = low[max(0, m.start() - 40) : m.start()]
        after_diagnosis = re.search(
            r"\b(?:etter|sidan|siden|fra|frå)\s+(?:\w+\s+){0,3}(?:diagnos|kreftdiagnos|påvis)", tail
        )
        assessment = re.search(
            r"(?:kartlegging|samtale|oppfølging|kontakt)\w*[^.;\n]*\b(?:etter|ved)\s*$", before
        )
        window = m.group("hi") is not None and (m.group("lo"), m.group("hi")) in (("3", "4"), ("12", "18"))
        if not (window or after_diagnosis or assessment or re.match(r"\s*etter\s+diagnose", tail)):
            continue
        lo = int(m.group("lo"))
        if 2 <= lo <= 6:
            yield m.start(), 2
        elif 9 <= lo <= 24:
            yield m.start(), 3
    if " år " in low:
        for m in _YEARS_AFTER.finditer(low):
            yield m.start(), 3


def _is_plan(low: str, position: int) -> bool:
    sentence = sentence_of(low, position)
    start, end = clause_bounds(low, sentence, position)
    for _ in range(4):  # «…, så etter 3-4 mnd og etter 12-18 mnd»: each time phrase borrows the verb
        joined = _JOINED_BY.search(low, max(sentence.start, start - 12), start)
        if start <= sentence.start or not _ELLIPTIC_CLAUSE.match(low, start) or joined is None:
            break
        start = clause_bounds(low, sentence, max(sentence.start, joined.start() - 1))[0]
    # A heading «SP2 i Pakkeforløp hjem: …» ends at its colon: what follows is another statement.
    before, after = low.rfind(":", start, position), low.find(":", position, end)
    start, end = (before + 1 if before != -1 else start), (after if after != -1 else end)
    clause = low[start:end]
    if re.search(r"(?<!\w)om\s+(?:ca\.?\s+|cirka\s+)?\d", low[max(start, position - 12) : position + 2]):
        return True
    return bool(_PLAN.search(clause)) and not _DONE.search(clause)


def contact_point(texts: Iterable[tuple[object, str]]) -> Found:
    plans: list[int] = []
    for where, text in texts:
        low = clean(text)
        if (
            "samh" not in low
            and "sp" not in low
            and "punkt" not in low
            and "mnd" not in low
            and "måne" not in low
            and " år " not in low
        ):
            continue
        for position, point in sorted(itertools.islice(_mentions(low), MAX_READ)):
            if _is_plan(low, position):
                plans.append(point)
                continue
            return Found(point, str(where), f"the text is about samhandlingspunkt {point}")
    if plans:
        named = ", ".join(str(p) for p in sorted(set(plans)))
        return Found(
            1,
            "",
            f"default: the first contact point; the text names samhandlingspunkt {named} only as a later plan",
        )
    return Found(1, "", "default: no contact point named; the first, the needs assessment at the hospital")


# ---------------------------------------------------------------------------------------------
# Dates

MONTHS = {
    "januar": 1, "jan": 1, "februar": 2, "feb": 2, "mars": 3, "mar": 3, "april": 4, "apr": 4,
    "mai": 5, "juni": 6, "jun": 6, "juli": 7, "jul": 7, "august": 8, "aug": 8, "september": 9,
    "sep": 9, "sept": 9, "oktober": 10, "okt": 10, "november": 11, "nov": 11, "desember": 12, "des": 12,
}  # fmt: skip
_MONTH_NAMES = "|".join(sorted(MONTHS, key=len, reverse=True))
DATE = re.compile(
    r"(?<![\w.])(?:(?P<iy>\d{4})-(?P<im>\d{1,2})-(?P<id>\d{1,2})"
    r"|(?P<d>\d{1,2})\s?[./]\s?(?P<m>\d{1,2})\s?[./-]\s?(?P<y>\d{4}|\d{2})"
    r"|(?P<td>\d{1,2})\.?\s*(?P<tm>" + _MONTH_NAMES + r")\.?\s+(?P<ty>\d{4}|\d{2}(?!\d)))(?![\w])"
)


def parse_norwegian_date(text: str) -> date | None:
    """dd.mm.yyyy, d.m.yy, yyyy-mm-dd, dd/mm/yyyy, dd/mm-yy, «3. september 2026», «3 sep 26».
    None for what is no calendar date (31.02., month 13); the year is checked by callers."""
    m = DATE.fullmatch(text.strip().lower())
    if m is None:
        return None
    return _date_of(m)


def _date_of(m: re.Match[str]) -> date | None:
    try:
        if m.group("iy"):
            return date(int(m.group("iy")), int(m.group("im")), int(m.group("id")))
        if m.group("y"):
            y = int(m.group("y"))
            return date(y + 2000 if y < 100 else y, int(m.group("m")), int(m.group("d")))
        y = int(m.group("ty"))
        return date(y + 2000 if y < 100 else y, MONTHS[m.group("tm")], int(m.group("td")))
    except (ValueError, OverflowError):
        return None


_DISEASE = (
    r"(?:\w*kreft\w*|\w*cancer\w*|\w*karsinom\w*|\w*sarkom\w*|\w*lymfom\w*|\w*leukemi\w*|\w*melanom\w*"
    r"|\w*myelom\w*|\w*gliom\w*|residiv\w*|tilbakefall\w*|metastase\w*|spreiing\w*|spredning\w*|svulst\w*"
    r"|tumor\w*|malign\w*|sykdommen|sjukdomen)"
)
_FOUND = r"(?:påvist|påvise|påvis|verifisert|bekreftet|stadfesta|stadfest|diagnostisert|oppdaget|oppdaga|funnet|funne)"
_DIAGNOSIS_CUE = re.compile(
    r"(?<!\w)(?:diagnosedato(?:en)?|diagnosetidspunkt(?:et)?|dx\s+(?:stilt|satt)|tidspunkt\s+for\s+diagnose\w*"
    r"|dato\s+for\s+(?:\w+\s+)?diagnose\w*|diagnostisert\w*|diagnostisering\w*|diagnostiserte"
    r"|diagnose\w*\s+(?:\w+\s+){0,2}(?:(?:ble|blei|vart|vert|er|var|blir)\s+)?(?:endelig\s+|endeleg\s+)?(?:stilt|satt|sett|gitt|gjeve|bekreftet|stadfesta|klar)"
    r"|(?:stilt|fikk|fekk|fått|fått\s+stilt|hatt|mottok|fikk\s+beskjed\s+om|fekk\s+beskjed\s+om|fikk\s+vite\s+om"
    r"|fekk\s+vite\s+om|informert\s+om|orientert\s+om)\s+(?:\w+\s+){0,2}(?:kreft)?diagnos\w*"
    r"|"
    + _DISEASE
    + r"\s+(?:\w+\s+){0,2}(?:(?:ble|blei|vart|vert|er|var|blir)\s+)?"
    + _FOUND
    + r"|(?:påvist|påviste|oppdaget|fant|fann|bekreftet|bekrefta|stadfesta|stadfestet|viste|verifiserte)\s+(?:\w+\s+){0,2}"
    + _DISEASE
    + r"|histologisk\s+(?:\w+\s+)?(?:verifisert|bekreftet|påvist)|biopsi\w*\s+(?:\w+\s+){0,2}(?:viste|bekreftet|påviste)"
    r"|(?:kreft|hoved|cancer)diagnose[nr]?|diagnose|dx)(?!\w)"
)
_OTHER_DATE_CUE = re.compile(
    r"(?<!\w)(?:innlagt|innlagd|innleggelse\w*|innlegging\w*|innkomst|utskrevet|utskriven|utskrive|utskriving\w*"
    r"|utskrivning\w*|utreise|operert|operasjon\w*|opr\.?|kirurgi\w*|reseksjon|kontroll\w*|time|timen|brev\w*"
    r"|skrevet|skrive|datert|journal\w*|konsultasjon\w*|samtale\w*|samtalen|kartlegging\w*|neste|født|fødd"
    r"|fødselsdato|behandlingsstart|behandling\w*|cellegift\w*|kjemoterapi\w*|stråle\w*|strålebehandling\w*"
    r"|oppstart|start\w*|henvist|henvisning\w*|tilvising\w*|mottatt|dødsdato|døde|døydde|sendt|poliklinisk\w*"
    r"|vurdert|vurdering|avtalt|planlagt|innkalt|innkalling\w*"
    r"|biopsi\w*\s+(?:tatt|tekne|teken)|tatt|møte\w*|utredet|utreda|utredning\w*|utgreidd|utgreiing\w*)(?!\w)"
)


_DATE_HINT = re.compile(r"diagnos|påvis|verifis|bekreft|oppdag|funne|stadfest|fant|fann|dx|viste")


def _plausible(day: date, message_day: date | None) -> bool:
    upper = (message_day.year + 1) if message_day else 2100
    return 1900 <= day.year <= upper


@dataclass
class DateResult:
    found: Found | None
    notes: list[str]


def diagnosis_date_in(texts: Iterable[tuple[object, str]], message_day: date | None) -> DateResult:
    """The first date in the text that its clause ties to the diagnosis (see the module)."""
    notes: list[str] = []
    for where, text in texts:
        low = clean(text)
        if not _DATE_HINT.search(low):
            continue
        for m in itertools.islice(DATE.finditer(low), MAX_READ):
            cue = _diagnosis_cue_for(low, m.start(), m.end())
            if cue is None:
                continue
            day = _date_of(m)
            if day is None or not _plausible(day, message_day):
                notes.append(f"the diagnosis date «{m.group(0)}» at {where} cannot be a date; ignored")
                continue
            return DateResult(Found(day, str(where), f"a diagnosis date in the text («{cue}»)"), notes)
    return DateResult(None, notes)


def _diagnosis_cue_for(low: str, start: int, end: int) -> str | None:
    sentence = sentence_of(low, start)
    c_start, c_end = clause_bounds(low, sentence, start)
    # A «Diagnosedato:» field holds its date across a colon, the same clause either way.
    before = low[c_start:start]
    cues = list(_DIAGNOSIS_CUE.finditer(before))
    if cues:
        cue = cues[-1]
        between = before[cue.end() :]
        if not _OTHER_DATE_CUE.search(between) and len(between.split()) <= 8:
            return cue.group(0)
    after = low[end:c_end]
    # A cue names the nearest date: what stands before an earlier date is that date's.
    recent = before[-25:]
    earlier = list(DATE.finditer(recent))
    if earlier:
        recent = recent[earlier[-1].end() :]
    cue_after = _DIAGNOSIS_CUE.search(after)
    if cue_after and len(after[: cue_after.start()].split()) <= 5:
        between = after[: cue_after.start()]
        lead = _OWN_DATE.match(after, cue_after.end())
        owned = DATE.match(after, lead.end()) if lead else None
        if not _OTHER_DATE_CUE.search(between) and not _OTHER_DATE_CUE.search(recent) and owned is None:
            return cue_after.group(0)
    confirms = _CONFIRMS.match(low, c_end) if c_end < sentence.end and not after.strip() else None
    if confirms and not _OTHER_DATE_CUE.search(recent):
        return confirms.group("cue")
    return None


_OWN_DATE = re.compile(r"[\s:]*(?:(?:den|er|var|ble|vart)\s+)?")
"""«…, diagnose klar 25.08.2026»: a cue followed by its own date is not an earlier date's."""
_CONFIRMS = re.compile(
    r"\s*,?\s*og\s+(?:\w+\s+)?(?P<cue>(?:bekreftet|bekrefta|viste|påviste|stadfesta|stadfestet|verifiserte)\s+"
    r"(?:\w+\s+){0,2}?" + _DISEASE + r")"
)
"""«svar kom 09.09.2026 og bekreftet kreft»: the answer's date is the diagnosis, told by the
verb the date's clause shares its subject with."""


# ---------------------------------------------------------------------------------------------
# Lifecycle

Lifecycle = Literal["start", "follow-up", "end", "death"]

_DEATH = re.compile(
    r"(?<!\w)(?:døde|døydde|døyde|dødde|dødd|avdøde|avdød|dødsfall\w*|exitus|avgått\s+ved\s+døden"
    r"|avgikk\s+ved\s+døden|omkom|omkommet|omkomne|gikk\s+bort|gått\s+bort|gjekk\s+bort|sovnet\s+inn|sovna\s+inn"
    r"|sovnet\s+stille\s+inn|(?:er|ble|blei|vart|var|funnet|erklært)\s+(?:\w+\s+){0,2}(?:død|daud)"
    r"|dødstidspunkt|dødsdato|mors)(?!\w)|(?<!\w)død\s*:?\s*(?=\d)"
)
_FAMILY = re.compile(
    r"(?<!\w)(?:mor|mora|moren|far|faren|faren|bror|broren|søster|søstera|søsteren|syster|ektefelle\w*|mann|mannen"
    r"|kone|kona|sønn|sønnen|son|sonen|datter|dattera|datteren|dotter|dottera|foreldre\w*|besteforeld\w*"
    r"|bestemor\w*|bestefar\w*|onkel\w*|tante\w*|samboer\w*|sambuar\w*|venn\w*|pårørende|pårørande|familie\w*"
    r"|slekt\w*|hund\w*|katt\w*|far\s*mor|morfar|mormor|farfar|farmor|partner\w*)(?!\w)"
)
_SOMEONE_ELSE_AFTER = re.compile(
    r"\s*(?:i|blant|innen|innan)\s+(?:den\s+)?(?:nær\s+|nære\s+|nærmeste\s+|nærmaste\s+|egen\s+|eiga\s+)?"
    r"(?:familie\w*|slekt\w*|pårørende|pårørande|nære)(?!\w)"
)
"""«dødsfall i nær familie», «… blant de nære»: not the patient («døde hos dottera» is)."""
_LONG_AGO = re.compile(
    r"(?<!\w)(?:for\s+(?:\d+|ett|eitt|et|eit|to|tre|fire|fem|mange|flere|fleire|noen|nokre)\s+"
    r"(?:år|måneder|månader|mnd)\s+(?:siden|sidan)|i\s+fjor|i\s+fjol|i\s+\d{4})(?!\w)"
)
_HYPOTHETICAL = re.compile(
    r"(?<!\w)(?:dersom|hvis|viss|frykt\w*|redd\w*|angst|tanker|snakk\w*|samtale\w*)(?!\w)"
)
_END = re.compile(
    r"(?<!\w)(?:avsluttes|avsluttet|avslutta|avsluttast|avslutter|avsluttar|avslutning|avsluttende|avsluttande|avslutte|ferdig|slutt"
    r"|sluttført|utskrives|utskrivast|utskrevet|utskriven|ut\s+av|går\s+ut|gå\s+ut|fullført|fullførd|endt)(?!\w)"
)
_PATHWAY_SUBJECT = re.compile(
    r"(?<!\w)(?:pakkeforløpet|forløpet|oppfølgingen|oppfølginga)(?!\w)(?!\s+(?:for|på|ved|hos|fra|frå|i|etter)\s"
    r"+(?!pakkeforløp|forløpet))"
)
"""What ends, when it is the pathway: «forløpet», «pakkeforløpet», «oppfølgingen» — not
«oppfølgingen på poliklinikken», «pakkeforløpet for brystkreft»."""


_DEATH_HINT = re.compile(r"dø|døy|daud|exitus|bort|sovn|mors")
_END_HINT = re.compile(r"avslut|ferdig|slutt|utskr|ut av|går ut|gå ut|fullfør|endt")


def _death_in(low: str) -> bool:
    if not _DEATH_HINT.search(low):
        return False
    for m in itertools.islice(_DEATH.finditer(low), MAX_READ):
        if m.group(0) == "mors" and not re.search(r"\bmors\b\s*(?:\d|den|dato|:)", low[m.start() :]):
            continue
        sentence = sentence_of(low, m.start())
        start, _end = clause_bounds(low, sentence, m.start())
        if _FAMILY.search(low[start : m.start()]) or low.startswith("?", sentence.end):
            continue  # someone else died, or it is a question
        if _HYPOTHETICAL.search(low[start : m.start()]):
            continue
        if _SOMEONE_ELSE_AFTER.match(low, m.end(), _end) or _LONG_AGO.search(low, m.end(), _end):
            continue  # «dødsfall i nær familie», «… for to år sidan»: not this patient, not now
        if re.search(r"(?<!\w)(?:ikke|ikkje)\s+(?:\w+\s+){0,1}$", low[start : m.start()]):
            continue
        return True
    return False


def _end_in(low: str) -> bool:
    if not _END_HINT.search(low):
        return False
    for m in itertools.islice(_END.finditer(low), MAX_READ):
        sentence = sentence_of(low, m.start())
        start, end = clause_bounds(low, sentence, m.start())
        opening = low.rfind("(", start, m.start())
        if opening != -1 and low.find(")", opening, m.start()) == -1:  # the cue is inside (…)
            closing = low.find(")", m.start(), end)
            start, end = opening + 1, closing if closing != -1 else end
        clause = low[start:end]
        if not (any(True for _ in find_phrases(clause)) or _PATHWAY_SUBJECT.search(clause)):
            continue
        nearest = low.rfind("pakkeforl", start, m.start())
        if nearest != -1 and not any(True for _ in find_phrases(low[nearest : m.start()])):
            continue  # «pakkeforløp for lungekreft avsluttet»: a diagnostic pathway ends
        if re.search(r"(?<!\w)(?:ikke|ikkje|før|innan|innen)\s+(?:\w+\s+){0,2}$", low[start : m.start()]):
            continue
        return True
    return False


def lifecycle(texts: Iterable[tuple[object, str]], point: int) -> tuple[Lifecycle, str]:
    """Where in the pathway this marked message is, and why."""
    ended = False
    for _where, text in texts:
        low = clean(text)
        if _death_in(low):
            return "death", "the text says the patient has died: open follow-ups are cancelled"
        ended = ended or _end_in(low)
    if ended:
        return "end", "the text says the pathway ends: open follow-ups are closed"
    if point in (2, 3):
        return "follow-up", f"the message is about samhandlingspunkt {point}: it closes that follow-up"
    return "start", "a needs assessment (samhandlingspunkt 1): it plans SP2 and SP3"


# ---------------------------------------------------------------------------------------------
# The municipal contact

_MUNICIPAL_CONTACT = re.compile(r"kontaktpunkt(?:et)?\s+i\s+kommunen\s*(?::|er|-|–)\s*\S")


def municipal_contact(texts: Iterable[tuple[object, str]]) -> str | None:
    """Where the text names the patient's contact point in the municipality (the path only)."""
    for where, text in texts:
        if _MUNICIPAL_CONTACT.search(clean(text)):
            return str(where)
    return None
