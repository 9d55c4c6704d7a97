"""Findings about a message, each with a stable code so scripts and tests can rely on it.

Messages are written for a person at an operations desk: what is wrong, where, and (when it
is not obvious) what it means for the sender. They never quote patient data or free text.
"""

from __future__ import annotations

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
