"""Findings about a message, each with a stable code so scripts and tests can rely on it.

Messages are written for a person at an operations desk: what is wrong, where, and (when it
is not obvious) what it means for the sender. They never quote patient data or free text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Issue:
    severity: Severity
    code: str
    message: str
    line: int | None = None
    path: str | None = None
    apprec_code: str | None = None
    """The 8221 error code a negative AppRec would carry for this finding, if any."""

    def as_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "code": self.code,
            "line": self.line,
            "path": self.path,
            "message": self.message,
        }

    def format(self, file: str) -> str:
        where = f"{file}:{self.line}" if self.line else file
        at = f" at {self.path}" if self.path else ""
        return f"{where}: {self.severity}: [{self.code}] {self.message}{at}"


def error(code: str, message: str, **kw: object) -> Issue:
    return Issue("error", code, message, **kw)  # type: ignore[arg-type]


def warning(code: str, message: str, **kw: object) -> Issue:
    return Issue("warning", code, message, **kw)  # type: ignore[arg-type]


def has_errors(issues: list[Issue]) -> bool:
    return any(i.severity == "error" for i in issues)


TRUNCATED = "ISSUES_TRUNCATED"


def capped(issues: list[Issue], most: int, what: str = "issues") -> list[Issue]:
    """At most ``most`` issues and one that counts the rest.

    A hostile message can be built to yield hundreds of thousands of issues; an operator
    reads the first few and the AppRec needs one per code. So beyond the first ``most``,
    only the first issue of each severity and AppRec code is kept (the AppRec and the
    verdict stay what they would be), and so are earlier counts of issues not shown.
    """
    if len(issues) <= most:
        return issues
    kept = issues[:most]
    seen = {(i.severity, i.apprec_code) for i in kept}
    dropped = 0
    for issue in issues[most:]:
        key = (issue.severity, issue.apprec_code)
        if issue.code == TRUNCATED or key not in seen:
            seen.add(key)
            kept.append(issue)
        else:
            dropped += 1
    if dropped:
        kept.append(
            Issue(
                "info",
                TRUNCATED,
                f"{dropped} more {what} of the same kinds are not shown; fix the first ones",
            )
        )
    return kept


_CODE_SHAPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,39}$")
ID_LIKE = re.compile(r"\d{11}")
"""A run of 11 digits anywhere, shaped like a national id: never shown, also inside a longer
code or name (``14835841481X`` is as telling as the id alone)."""


def shown_code(value: str) -> str:
    """A code from the message as logs, the store's history and listings may carry it: as
    itself when it is code-shaped, else a placeholder (the message type field is the sender's
    text, and has been seen to hold a national id or a name)."""
    return value if _CODE_SHAPE.match(value) and not ID_LIKE.search(value) else "(not a code)"


def code_text(value: str | None) -> str:
    """A code from the message as an issue may show it: a short run of code characters,
    quoted. Anything else (a blank, a phrase, an 11-digit number shaped like a national id)
    is described instead of shown, since senders put all kinds of data in code fields."""
    if value is None or not value.strip():
        return "(empty)"
    if not _CODE_SHAPE.match(value):
        return "(not shown: not a code)"
    if ID_LIKE.search(value):
        return "(not shown: 11 digits)"
    return repr(value)
