"""The follow-up plan: samhandlingspunkt 2 (3–4 months after the diagnosis) and 3 (12–18
months after) are the municipality's own talks with the patient, and nothing else reminds
anyone of them.

A marked SP1 message starts an episode for the patient, anchored on the diagnosis date (or the
message date, marked ``estimated``); each episode has an SP2 and an SP3 follow-up. A relapse is
a new episode: an SP1 message whose anchor lies more than ``SAME_EPISODE_DAYS`` from every
episode the patient has. A later message marked SP2 or SP3 for the patient closes the
matching follow-up. Reminders go to the municipality's kreftkoordinator (or case unit): one
when the window opens, one when it is about to close and the follow-up is still open; after
downtime, the one that is due now, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

SAME_EPISODE_DAYS = 90
OSLO = ZoneInfo("Europe/Oslo")
Phase = Literal["open", "closing", "overdue"]


@dataclass(frozen=True)
class FollowupFacts:
    """What a processed, routed message tells the follow-up plan (carried in its Change)."""

    municipality: str
    patient_id: str | None
    contact_point: int
    anchor: date | None = None
    anchor_kind: str | None = None
    """``diagnosis`` or ``estimated``."""
    windows: tuple[tuple[int, date, date], ...] = ()
    lifecycle: str = "start"
    """``start``, ``follow-up``, ``end`` (closes the patient's open follow-ups) or ``death``
    (cancels them, and no plan is made for the patient again)."""


@dataclass(frozen=True)
class Followup:
    id: int
    episode_id: int
    municipality: str
    point: int
    window_start: date
    window_end: date
    anchor: date
    anchor_kind: str
    status: str
    """``open``, ``done`` or ``cancelled``."""
    source_message_id: int
    source_msg_id: str | None
    received_at: datetime
    opened_reminder_at: datetime | None
    closing_reminder_at: datetime | None
    closed_at: datetime | None
    closed_by: str | None
    note: str | None

    def condition(self, today: date) -> str:
        """``open`` (window not yet open), ``due`` (window open), ``overdue``, or the status."""
        if self.status != "open":
            return self.status
        if today > self.window_end:
            return "overdue"
        return "due" if today >= self.window_start else "open"


@dataclass(frozen=True)
class FollowupFilter:
    municipality: str | None = None
    due: bool = False
    overdue: bool = False
    include_closed: bool = False


def local_date(moment: datetime) -> date:
    """The date in Norway: windows and reminders follow the municipality's calendar."""
    return moment.astimezone(OSLO).date()


def due_phase(f: Followup, today: date, closing_days: int) -> Phase | None:
    """Which reminder is due now, if any. After downtime only the latest phase is sent."""
    if f.status != "open":
        return None
    if f.closing_reminder_at is None:
        if today > f.window_end:
            return "overdue"
        if today >= f.window_end - timedelta(days=closing_days):
            return "closing"
    if f.opened_reminder_at is None and f.window_start <= today <= f.window_end:
        return "open"
    return None


POINT_TEXT = {2: "3–4 måneder", 3: "12–18 måneder"}


def reminder_text(f: Followup, phase: Phase, our_name: str) -> str:
    """The reminder, in Norwegian for the municipality's staff. Ids and dates only: the case
    unit finds the patient by the original message's MsgId."""
    anchor = (
        f"diagnosedato {f.anchor.isoformat()}"
        if f.anchor_kind == "diagnosis"
        else f"meldingsdato {f.anchor.isoformat()} (diagnosedato ikke oppgitt; estimert)"
    )
    head = {
        "open": f"Vinduet for samhandlingspunkt {f.point} er åpent nå.",
        "closing": f"Vinduet for samhandlingspunkt {f.point} lukkes {f.window_end.isoformat()}, "
        "og oppfølgingen er fortsatt ikke registrert som gjennomført.",
        "overdue": f"Vinduet for samhandlingspunkt {f.point} lukket seg {f.window_end.isoformat()} "
        "uten at oppfølgingen er registrert som gjennomført.",
    }[phase]
    return (
        f"Påminnelse: Pakkeforløp hjem for pasienter med kreft, samhandlingspunkt {f.point} "
        f"({POINT_TEXT.get(f.point, '')} etter diagnose).\n"
        f"{head}\n"
        f"Vindu: {f.window_start.isoformat()} – {f.window_end.isoformat()}, regnet fra {anchor}.\n"
        f"Opprinnelig melding: MsgId {f.source_msg_id or '-'}, mottatt {f.received_at.date().isoformat()} "
        f"({our_name} melding {f.source_message_id}).\n"
        f"Oppfølging {f.id} ({f.municipality}). Når samtalen er gjennomført: "
        f'pfhjem-msg followups done {f.id} --note "…"\n'
    )


# -- iCalendar (RFC 5545) --------------------------------------------------------------------

ICS_SEQUENCE_OPEN = 0
ICS_SEQUENCE_CLOSED = 1
"""A window changes once (open → done or cancelled), so two revision numbers suffice."""


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def _fold(line: str) -> list[str]:
    """Lines of at most 75 octets; continuation lines start with a space (RFC 5545 3.1)."""
    out: list[str] = []
    current = ""
    for ch in line:
        limit = 75 if not out else 74
        if len((current + ch).encode("utf-8")) > limit:
            out.append(current)
            current = ch
        else:
            current += ch
    out.append(current)
    return [out[0]] + [" " + rest for rest in out[1:]]


def ics(followups: list[Followup], now: datetime, case_units: dict[str, str]) -> str:
    """One VEVENT per window: our follow-up id and the case-unit reference, never the
    patient's name or national id, nor the closing note (free text).

    A done or cancelled window stays in the file as ``STATUS:CANCELLED`` with the same UID and
    a higher ``SEQUENCE`` (RFC 5545 3.8.7.4: a revision the calendar must take over the copy
    it holds), so re-importing the file removes the event instead of leaving a stale one."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//pfhjem-msg//followups//NO", "CALSCALE:GREGORIAN",
             "METHOD:PUBLISH", "X-WR-CALNAME:Pakkeforløp hjem – oppfølging"]  # fmt: skip
    for f in followups:
        unit = case_units.get(f.municipality, f.municipality)
        closed = {"done": "Gjennomført. ", "cancelled": "Avlyst. "}.get(f.status, "")
        description = (
            f"{closed}Oppfølging {f.id}: samhandlingspunkt {f.point} i Pakkeforløp hjem for pasienter med kreft. "
            f"Vindu {f.window_start.isoformat()} – {f.window_end.isoformat()}. "
            f"Opprinnelig melding MsgId {f.source_msg_id or '-'} til {unit}. "
            f"Detaljer: pfhjem-msg followups show {f.id}"
        )
        lines += [
            "BEGIN:VEVENT",
            f"UID:followup-{f.id}-sp{f.point}@pfhjem-msg",
            f"DTSTAMP:{stamp}",
            f"SEQUENCE:{ICS_SEQUENCE_OPEN if f.status == 'open' else ICS_SEQUENCE_CLOSED}",
            f"STATUS:{'CONFIRMED' if f.status == 'open' else 'CANCELLED'}",
            f"DTSTART;VALUE=DATE:{f.window_start:%Y%m%d}",
            f"DTEND;VALUE=DATE:{f.window_end + timedelta(days=1):%Y%m%d}",
            f"SUMMARY:{_escape(f'Pakkeforløp hjem SP{f.point} – oppfølging {f.id}')}",
            f"DESCRIPTION:{_escape(description)}",
            "TRANSP:TRANSPARENT",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "".join(part + "\r\n" for line in lines for part in _fold(line))
