"""The GP registry the operator provides: a CSV export from Fastlegeregisteret.

Columns (a header row names them; ``;`` or ``,`` separated): ``fnr``, ``gp_her_id``,
``gp_name``, ``office_her_id``, ``office_name``. The file is read again when it changes, so
an operator replaces it without restarting anything. A malformed row is skipped and reported
with its line number; a missing file is a configuration error.
"""

from __future__ import annotations

import csv
import io
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pfhjem_msg.errors import ConfigError

COLUMNS = ("fnr", "gp_her_id", "gp_name", "office_her_id", "office_name")


@dataclass(frozen=True)
class GP:
    her_id: str
    name: str
    office_her_id: str
    office_name: str


@dataclass
class RegistryLoad:
    by_fnr: dict[str, GP] = field(default_factory=dict)
    by_her: dict[str, GP] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """One line per skipped row: ``file:line: what is wrong`` (never the row's content)."""


def parse(text: str, source: str) -> RegistryLoad:
    out = RegistryLoad()
    lines = text.splitlines()
    if not lines:
        out.problems.append(f"{source}: the file is empty")
        return out
    delimiter = ";" if lines[0].count(";") >= lines[0].count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader)]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ConfigError(
            f"{source}:1: the GP registry's header lacks {', '.join(missing)}; "
            f"it must name the columns {', '.join(COLUMNS)}"
        )
    index = {c: header.index(c) for c in COLUMNS}
    for line_no, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < len(header):
            out.problems.append(
                f"{source}:{line_no}: {len(row)} columns, {len(header)} expected; row skipped"
            )
            continue
        values = {c: row[i].strip() for c, i in index.items()}
        if not (values["fnr"].isdigit() and len(values["fnr"]) == 11):
            out.problems.append(f"{source}:{line_no}: fnr is not 11 digits; row skipped")
            continue
        if not values["gp_her_id"].isdigit() or not values["office_her_id"].isdigit():
            out.problems.append(f"{source}:{line_no}: a HER-id is not a number; row skipped")
            continue
        gp = GP(values["gp_her_id"], values["gp_name"], values["office_her_id"], values["office_name"])
        out.by_fnr[values["fnr"]] = gp
        out.by_her.setdefault(gp.her_id, gp)
    return out


class GPRegistry:
    """Lookups by fødselsnummer or GP HER-id, from a file re-read whenever it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._data = RegistryLoad()
        self.refresh()

    def refresh(self) -> RegistryLoad:
        try:
            st = self.path.stat()
        except OSError as exc:
            raise ConfigError(
                f"GP registry {self.path} cannot be read ({exc.strerror}); fix [gp_registry] file "
                "or put the export there"
            ) from exc
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                try:
                    text = self.path.read_text(encoding="utf-8-sig")
                except UnicodeDecodeError:
                    text = self.path.read_text(encoding="iso-8859-1")
                self._data = parse(text, str(self.path))
                self._stamp = stamp
            return self._data

    @property
    def problems(self) -> list[str]:
        return self._data.problems

    def by_fnr(self, fnr: str) -> GP | None:
        return self.refresh().by_fnr.get(fnr)

    def by_her(self, her_id: str) -> GP | None:
        return self.refresh().by_her.get(her_id)
