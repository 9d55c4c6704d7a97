"""The follow-up windows: SP2 3–4 calendar months after the anchor, SP3 12–18 months after."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date


def add_months(day: date, months: int) -> date:
    """Calendar months; the 31st becomes the last day of a shorter month. Raises ValueError
    past year 9999 (callers check the anchor is plausible first)."""
    total = day.year * 12 + day.month - 1 + months
    year, month = divmod(total, 12)
    if not 1 <= year <= 9999:
        raise ValueError(f"year {year} is out of range")
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
