"""Where each key of a TOML file is written, so a configuration problem names its line.

``tomllib`` keeps no positions, so this is a small scan of the text that follows table
headers (``[a.b]``, ``[[a]]`` with each repetition counted) and key lines (``a.b = …``); a
table only implied by a header or a dotted key is placed where it first appears. A
key inside an inline table or a multi-line array is placed on the line of the key that
holds it, which is where an operator looks. The scan runs only on text ``tomllib`` has
already accepted, so it need not diagnose anything itself.
"""

from __future__ import annotations

Loc = tuple[str | int, ...]


def key_lines(text: str) -> dict[Loc, int]:
    """Every table and key of ``text`` → the 1-based line it is written on."""
    lines: dict[Loc, int] = {}
    arrays: dict[Loc, int] = {}
    table: Loc = ()
    pending: str | None = None  # the closing quotes of a multi-line string still open
    depth = 0  # open brackets of a multi-line array
    for number, line in enumerate(text.splitlines(), start=1):
        if pending is not None:
            pending, depth = _rest(line, pending, depth)
            continue
        if depth > 0:
            pending, depth = _rest(line, None, depth)
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            double = stripped.startswith("[[")
            parts, _ = _dotted(stripped, 2 if double else 1)
            table = _table(parts, double, arrays)
            _place(lines, table, number)
            continue
        parts, end = _dotted(stripped, 0)
        if not parts:
            continue
        _place(lines, table + tuple(parts), number)
        pending, depth = _rest(stripped[end + 1 :], None, 0)
    return lines


def _place(lines: dict[Loc, int], loc: Loc, number: int) -> None:
    """``loc`` and every table above it that no earlier line wrote: ``[delivery.retry]`` (or
    ``delivery.retry.x = 1``) is where ``delivery`` first appears, so an unknown ``delivery``
    is reported there."""
    for end in range(1, len(loc) + 1):
        lines.setdefault(loc[:end], number)


def line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of ``loc`` or, when it is not written (a missing key), of what holds it."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _table(parts: list[str], double: bool, arrays: dict[Loc, int]) -> Loc:
    """The path of a header: ``[municipality.case_unit]`` after the second ``[[municipality]]``
    is ``("municipality", 1, "case_unit")``."""
    path: Loc = ()
    for i, part in enumerate(parts):
        path += (part,)
        last = i == len(parts) - 1
        if last and double:
            arrays[path] = arrays.get(path, 0) + 1
        if path in arrays:
            path += (arrays[path] - 1,)
    return path


def _dotted(text: str, start: int) -> tuple[list[str], int]:
    """The parts of a dotted key from ``start`` up to ``=`` or ``]``, and where it stopped."""
    parts: list[str] = []
    current = ""
    i = start
    while i < len(text):
        c = text[i]
        if c in "\"'":
            close = text.find(c, i + 1)
            if close < 0:
                break
            current += text[i + 1 : close]
            i = close + 1
            continue
        if c == ".":
            parts.append(current.strip())
            current = ""
        elif c in "=]":
            break
        else:
            current += c
        i += 1
    if current.strip():
        parts.append(current.strip())
    return parts, i


def _rest(text: str, pending: str | None, depth: int) -> tuple[str | None, int]:
    """Follow a value to the end of the line: is a multi-line string still open (and with
    which quotes), and how many array brackets are open?"""
    i = 0
    if pending is not None:
        close = text.find(pending)
        if close < 0:
            return pending, depth
        i = close + 3
    while i < len(text):
        c = text[i]
        if c == "#":
            break
        if text.startswith('"""', i) or text.startswith("'''", i):
            quotes = text[i : i + 3]
            close = text.find(quotes, i + 3)
            if close < 0:
                return quotes, depth
            i = close + 3
            continue
        if c in "\"'":
            i = _string_end(text, i)
            continue
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        i += 1
    return None, max(depth, 0)


def _string_end(text: str, start: int) -> int:
    quote = text[start]
    i = start + 1
    while i < len(text):
        if quote == '"' and text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    return i
