"""Configuration problems in an operator's words: the key, its line, the municipality it is
in, and what to write instead. Values from the file are never repeated (a misplaced password
would be); only their kind is named ("here: text")."""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pfhjem_msg.config_lines import Loc, line_of
from pfhjem_msg.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError
    from pydantic_core import ErrorDetails


@dataclass(frozen=True)
class Problem:
    key: str
    """``municipality[1].case_unit.transport``: the path an operator reads in the file."""
    message: str
    line: int | None = None
    municipality: str | None = None
    """The name of the ``[[municipality]]`` the key is in, when it has one."""

    def text(self, path: Path) -> str:
        """``file:line: key: message``, as compilers write it, for ``config check``."""
        where = f"{path}:{self.line}" if self.line else str(path)
        inside = f' (in municipality "{self.municipality}")' if self.municipality else ""
        return f"{where}: {self.key}{inside}: {self.message}"

    def __str__(self) -> str:
        """``key (line, municipality): message``, key first, for an error that names the file
        once (a refused start, a rejected reload in the log)."""
        details = [f"line {self.line}"] if self.line else []
        details += [f'in municipality "{self.municipality}"'] if self.municipality else []
        where = " (" + ", ".join(details) + ")" if details else ""
        return f"{self.key}{where}: {self.message}"


class ConfigProblems(ConfigError):
    """The configuration has problems; ``problems`` lists every one, in file order."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path = path
        self.problems = sorted(problems, key=lambda p: (p.line is None, p.line or 0))
        listing = "\n  ".join(map(str, self.problems))
        super().__init__(
            f"configuration {path} has {len(self.problems)} problem(s); correct them and run "
            f"`pfhjem-msg config check`:\n  {listing}"
        )


def key_name(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def problem_at(loc: Loc, message: str, lines: dict[Loc, int], raw: dict[str, Any]) -> Problem:
    return Problem(key_name(loc) or "(file)", message, line_of(lines, loc), _municipality(loc, raw))


def from_validation(
    error: ValidationError, model: type[BaseModel], lines: dict[Loc, int], raw: dict[str, Any]
) -> list[Problem]:
    out = []
    for e in error.errors(include_url=False, include_input=True):
        loc: Loc = tuple(e["loc"])
        key = (e.get("ctx") or {}).get("key")
        if isinstance(key, str):
            loc += tuple(int(p) if p.isdigit() else p for p in key.split("."))
        out.append(problem_at(loc, _message(e, loc, model), lines, raw))
    return out


def _municipality(loc: Loc, raw: dict[str, Any]) -> str | None:
    if len(loc) < 2 or loc[0] != "municipality" or not isinstance(loc[1], int):
        return None
    items = raw.get("municipality")
    if not isinstance(items, list) or loc[1] >= len(items) or not isinstance(items[loc[1]], dict):
        return None
    name = items[loc[1]].get("name")
    return name if isinstance(name, str) and name else None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    for types, name in (
        (str, "text"),
        (int, "a whole number"),
        (float, "a number with decimals"),
        (dict, "a table"),
        (list, "a list"),
        ((datetime, date, time), "a date or time"),
    ):
        if isinstance(value, types):
            return name
    return type(value).__name__


def _message(e: ErrorDetails, loc: Loc, model: type[BaseModel]) -> str:
    kind = e["type"]
    here = f" (here: {_kind(e['input'])})" if "input" in e else ""
    name = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if kind == "extra_forbidden":
        what = "section" if isinstance(e.get("input"), dict) else "key"
        known = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f"; known here: {', '.join(known)}"
        return f"unknown {what}{hint}"
    if kind == "missing":
        return "is required"
    if name in ("her_id", "her_ids") and kind == "string_type":
        return f'must be a HER-id: digits written in quotes, e.g. "8300010"{here}'
    simple = {
        "bool_type": "must be true or false, without quotes",
        "int_type": "must be a whole number, without quotes",
        "float_type": "must be a number, without quotes",
        "string_type": "must be text in quotes",
        "model_type": "must be a table ([section] or { key = value, … })",
        "dict_type": "must be a table ([section] or { key = value, … })",
        "list_type": 'must be a list, e.g. ["…"]',
    }
    if kind in simple:
        return simple[kind] + here
    if kind == "literal_error":
        expected = str((e.get("ctx") or {}).get("expected", "")).replace("'", '"')
        return f"must be {expected}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    message = e["msg"]
    return "must be" + message[len("Input should be") :] if message.startswith("Input should be") else message


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the table at ``loc`` may hold, for "did you mean"."""
    from pydantic import BaseModel

    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if (
            not (isinstance(current, type) and issubclass(current, BaseModel))
            or part not in current.model_fields
        ):
            return []
        current = _model_in(current.model_fields[part].annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The model inside ``X | None``, ``list[X]`` or ``Annotated[X, …]``."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
