"""Which messages are «Pakkeforløp hjem for pasienter med kreft», and what else they say.

No national code marks these messages: hospitals write the name as free text, in several
spellings, in any free-text place, in narrative. ``detect`` finds the marking (``marking``)
in every free-text place of the message (``places``), unless the sender negates it or it sits
in a quoted earlier message (``text``); ``analyse`` adds the contact point, the diagnosis date
and the pathway's lifecycle (``facts``) and the follow-up windows (``windows``).

Rules reported in ``explain``, most specific first: ``full`` («… for pasienter med kreft»),
``kreftpasienter`` («… for kreftpasienter», the older title), ``kreft`` («… – kreft»),
``short`` («Pakkeforløp hjem»/«heim» alone), ``local:<n>`` (``[pathway] phrases``).

Nothing here raises on any text: a date that cannot be a date, or a window past the calendar,
becomes a note.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from lxml import etree

from pfhjem_msg.kith.model import EpikrisePayload, Message
from pfhjem_msg.pathway.facts import (
    MONTHS,
    Found,
    Lifecycle,
    contact_point,
    diagnosis_date_in,
    lifecycle,
    municipal_contact,
    parse_norwegian_date,
)
from pfhjem_msg.pathway.marking import (
    DEFAULT_NEGATIONS,
    Detection,
    Match,
    Matcher,
    MatcherConfig,
    mentions_diagnostic_pathway,
)
from pfhjem_msg.pathway.places import Place, model_places, tree_places
from pfhjem_msg.pathway.text import clean, normalise, sentences, unquoted
from pfhjem_msg.pathway.windows import Window, add_months, followup_windows


def places(msg: Message, root: etree._Element | None = None) -> list[tuple[Place, str]]:
    """Every free-text place of the message: from its document when given, else its model."""
    return list(tree_places(root) if root is not None else model_places(msg))


def detect(
    msg: Message,
    matcher: Matcher | None = None,
    root: etree._Element | None = None,
    texts: Iterable[tuple[Place, str]] | None = None,
) -> Detection:
    matcher = matcher or Matcher()
    if msg.is_apprec:
        return Detection(False, not_marked_reason="an AppRec is never a pathway message")
    found: list[Match] = []
    negated: list[Match] = []
    diagnostic = False
    listed = list(texts if texts is not None else places(msg, root))
    for where, text in listed:
        for m in matcher.find(where, text):
            (negated if m.negated_by else found).append(m)
        if not found and not diagnostic:
            low = clean(text)
            diagnostic = ("pakk" in low or "forl" in low) and mentions_diagnostic_pathway(low)
    if found and all(_is_title(m.where) for m in found):
        # The marking is only the message's title or topic: the body may decline it.
        decline = negated[0] if negated else _body_declines(listed, matcher)
        if decline is not None:
            negated = [*negated, *(Match(m.where, m.text, m.rule, decline.negated_by, decline.negation_clause)
                                   for m in found)]  # fmt: skip
            found = []
    if found:
        return Detection(True, found, negated)
    if negated:
        m = negated[0]
        reason = (
            f"the sender negates the marking: «{m.negated_by}» applies to the clause «{m.negation_clause}» "
            f"at {m.where}"
        )
    elif diagnostic:
        reason = (
            "mentions a diagnostic cancer pathway («pakkeforløp» without «hjem»/«heim»), not Pakkeforløp hjem"
        )
    else:
        reason = "no marking «Pakkeforløp hjem» in any free-text place (quoted earlier messages are not read)"
    return Detection(False, [], negated, reason)


_TITLES = ("/Tema", "/EmneSporsmal", "/ContentDescription", "/Description", "/MsgDescr", "/@DN", "/@OT")


def _is_title(where: str) -> bool:
    """A place that names what the message is about rather than saying it (a topic, a subject,
    a document title, a heading or code's display name)."""
    return where.endswith(_TITLES)


def _body_declines(texts: list[tuple[Place, str]], matcher: Matcher) -> Match | None:
    """A sentence in the body that on its own declines the offer the title names («Pasienten
    takket nei.», «Ikke aktuelt.», «Hun ønsker ikke å delta.»)."""
    for where, text in texts:
        if _is_title(str(where)):
            continue
        low = clean(text)
        for span in sentences(low):
            sentence = low[span.start : span.end].strip(" .!:")
            m = _STANDALONE_DECLINE.fullmatch(sentence)
            if m:
                return Match(str(where), "", "", m.group("cue"), sentence)
    return None


_STANDALONE_DECLINE = re.compile(
    r"(?:(?:pasienten|pas|pt|han|hun|ho|de|dei|pasient og pårørende)\s+)?(?:har\s+|hadde\s+)?"
    r"(?:(?:i\s+dag|no|nå|derfor|dessverre)\s+)?"
    r"(?P<cue>takket nei|takka nei|takker nei|takkar nei|sagt nei|sa nei|svart nei|avslått|avslo|avslår|reservert seg"
    r"|ikke aktuelt|ikkje aktuelt|ikke aktuell|ikkje aktuell|ønsker ikke å delta|ønskjer ikkje å delta"
    r"|ønsker ikke dette|ønskjer ikkje dette|vil ikke delta|vil ikkje delta|ønsket ikke å delta|ønskte ikkje å delta)"
    r"(?:\s+(?:til|på)\s+(?:dette|det|tilbudet|tilbodet|forløpet|pakkeforløpet))?(?:\s+(?:nå|no|i dag|foreløpig))?"
)


@dataclass
class PathwayFacts:
    """Everything the pathway says about one message."""

    detection: Detection
    contact_point: Found
    diagnosis: Found | None
    municipal_contact_where: str | None
    followups: list[Window]
    lifecycle: Lifecycle | None = None
    """For a marked message: ``start``, ``follow-up``, ``end`` or ``death``."""
    lifecycle_reason: str | None = None
    plan_reason: str = ""
    """Why the message plans what it plans (or nothing)."""
    patient_named: bool = True
    """False when the message names no patient: it plans nothing."""
    notes: list[str] = field(default_factory=list)
    """Things read but ignored (a date that cannot be one), for ``explain``."""

    def explain(self) -> dict[str, Any]:
        return {
            "lifecycle": self.lifecycle,
            "lifecycle_reason": self.lifecycle_reason,
            "plan_reason": self.plan_reason,
            "pathway_notes": list(self.notes),
            "negated": [m.as_dict() for m in self.detection.negated],
        }


def _structured_diagnosis(msg: Message, kinds: tuple[str, ...], message_day: date | None,
                          notes: list[str]) -> Found | None:  # fmt: skip
    payload = msg.payload
    if not isinstance(payload, EpikrisePayload):
        return None
    for diag in payload.diagnoses:
        if diag.kind in kinds and diag.date:
            day = parse_norwegian_date(diag.date[:10])
            if day is None or not (1900 <= day.year <= (message_day.year + 1 if message_day else 2100)):
                notes.append(
                    f"the date of diagnosis {diag.code.value} at {diag.path} cannot be a date; ignored"
                )
                continue
            return Found(day, str(diag.path), f"the date of diagnosis {diag.code.value} ({diag.kind})")
    return None


def _has_patient(msg: Message) -> bool:
    p = msg.patient
    return p is not None and (p.national_id is not None or p.has_name)


def analyse(msg: Message, matcher: Matcher | None = None, root: etree._Element | None = None) -> PathwayFacts:
    """The marking, and for a marked message what it is about, its diagnosis date, its place
    in the pathway and the follow-up windows it plans. An unmarked message is not read further:
    nothing else about it matters to the pathway (and most messages are unmarked)."""
    texts = places(msg, root)
    detection = detect(msg, matcher, texts=texts)
    if not detection.marked:
        return PathwayFacts(detection, Found(None, "", "not a pathway message"), None, None, [],
                            plan_reason="not a pathway message: plans nothing",
                            patient_named=_has_patient(msg))  # fmt: skip
    point = contact_point(texts)
    gen = msg.gen_datetime
    message_day = gen.date() if gen is not None else None
    notes: list[str] = []
    diagnosis = _structured_diagnosis(msg, ("H",), message_day, notes)
    if diagnosis is None:
        in_text = diagnosis_date_in(texts, message_day)
        notes += in_text.notes
        diagnosis = in_text.found or _structured_diagnosis(msg, ("B",), message_day, notes)
    facts = PathwayFacts(detection, point, diagnosis, municipal_contact(texts), [], notes=notes,
                         patient_named=_has_patient(msg))  # fmt: skip
    facts.lifecycle, facts.lifecycle_reason = lifecycle(texts, int(point.value))  # type: ignore[call-overload]
    if not facts.patient_named:
        facts.plan_reason = "the message names no patient (general information or a test): plans nothing"
    elif facts.lifecycle == "death":
        facts.plan_reason = "the patient has died: plans nothing, cancels the patient's open follow-ups"
    elif facts.lifecycle == "end":
        facts.plan_reason = "the pathway ends: plans nothing, closes the patient's open follow-ups"
    elif facts.lifecycle == "follow-up":
        facts.plan_reason = f"closes the patient's open SP{point.value} follow-up"
    else:
        anchor_day, kind = (diagnosis.value, "diagnosis") if diagnosis else (message_day, "estimated")
        if not isinstance(anchor_day, date):
            facts.plan_reason = "no diagnosis date and no message date: plans nothing"
            return facts
        try:
            facts.followups = followup_windows(anchor_day, kind)
            facts.plan_reason = (
                f"plans SP2 and SP3 from the {'diagnosis date' if diagnosis else 'message date (estimated)'}"
            )
        except ValueError:
            notes.append(f"the windows from {anchor_day.isoformat()} fall outside the calendar; ignored")
            facts.plan_reason = "the anchor date gives no calendar windows: plans nothing"
    return facts


__all__ = [
    "DEFAULT_NEGATIONS",
    "MONTHS",
    "Detection",
    "Found",
    "Lifecycle",
    "Match",
    "Matcher",
    "MatcherConfig",
    "PathwayFacts",
    "Window",
    "add_months",
    "analyse",
    "clean",
    "detect",
    "followup_windows",
    "normalise",
    "parse_norwegian_date",
    "places",
    "unquoted",
]
