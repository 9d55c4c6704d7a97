"""The GP registry the operator provides: a CSV export from Fastlegeregisteret.

Columns (a header row names them; ``;`` or ``,`` separated): ``fnr``, ``gp_her_id``,
``gp_name``, ``office_her_id``, ``office_name``. The file is read again when it changes, so
an operator replaces it without restarting anything. A malformed row (too few or too many
columns, a bad fnr or HER-id) is skipped and reported with its line number; a missing file
is a configuration error.

A patient listed twice with different GPs is a conflict, not «last row wins»: the registry
then names no GP for that patient, so no GP copy goes out on a guess, and the routing
decision says which lines disagree. Identical duplicate rows are harmless. Problems are
logged once each time the file is (re)loaded, never per message.
"""

from __future__ import annotations

import csv
import io
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pfhjem_msg.errors import ConfigError
from pfhjem_msg.logs import get_logger

log = get_logger("pfhjem_msg.gpregistry")
LOGGED_PROBLEMS = 50
"""At most this many problem lines per load in the log; `config check` lists them all."""

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
    conflicts: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """fnr → the line numbers that give the patient different GPs."""
    problems: list[str] = field(default_factory=list)
    """One line per skipped or conflicting row: ``file:line: what is wrong`` (never the row's
    content)."""


@dataclass(frozen=True)
class Lookup:
    """The registry's answer for one patient: a GP, or none, and if none because rows
    disagree, which lines."""

    gp: GP | None
    conflict_lines: tuple[int, ...] = ()


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
    seen_on: dict[str, list[int]] = {}
    for row in reader:
        line_no = reader.line_num  # where the row ends (a quoted value may span lines)
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            hint = "" if len(row) < len(header) else f" (a value with an unquoted {delimiter!r}?)"
            out.problems.append(
                f"{source}:{line_no}: {len(row)} columns, {len(header)} expected{hint}; row skipped"
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
        fnr = values["fnr"]
        out.by_her.setdefault(gp.her_id, gp)
        earlier = out.by_fnr.get(fnr)
        if earlier is None and fnr not in out.conflicts:
            out.by_fnr[fnr] = gp
            seen_on[fnr] = [line_no]
            continue
        seen_on[fnr].append(line_no)
        if earlier is not None and (earlier.her_id, earlier.office_her_id) == (gp.her_id, gp.office_her_id):
            continue  # the same GP again: harmless
        if earlier is not None:
            del out.by_fnr[fnr]
        out.conflicts[fnr] = tuple(seen_on[fnr])
        out.problems.append(
            f"{source}:{line_no}: the patient is listed with different GPs "
            f"(lines {', '.join(map(str, seen_on[fnr]))}); no GP copy from the registry for this patient "
            "until the file lists one GP"
        )
    return out


class GPRegistry:
    """Lookups by fødselsnummer or GP HER-id, from a file re-read whenever it changes."""

    def __init__(self, path: Path, log_problems: bool = True) -> None:
        self.path = path
        self.log_problems = log_problems
        """Off for commands that print the problems themselves (``config check``, ``explain``)."""
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
                if self.log_problems:
                    self._log_load(self._data)
            return self._data

    def _log_load(self, data: RegistryLoad) -> None:
        log.info("gp_registry.loaded", file=str(self.path), patients=len(data.by_fnr),
                 conflicting_patients=len(data.conflicts), problems=len(data.problems))  # fmt: skip
        for problem in data.problems[:LOGGED_PROBLEMS]:
            log.warning("gp_registry.problem", problem=problem)
        if len(data.problems) > LOGGED_PROBLEMS:
            log.warning("gp_registry.problem", problem=f"{len(data.problems) - LOGGED_PROBLEMS} more; "
                        "`pfhjem-msg config check` lists them all")  # fmt: skip

    @property
    def problems(self) -> list[str]:
        return self._data.problems

    def by_fnr(self, fnr: str) -> GP | None:
        return self.refresh().by_fnr.get(fnr)

    def lookup(self, fnr: str) -> Lookup:
        """The GP for a patient from one load of the file (so the answer and the reason for
        no answer cannot come from two versions of it)."""
        data = self.refresh()
        return Lookup(data.by_fnr.get(fnr), data.conflicts.get(fnr, ()))

    def by_her(self, her_id: str) -> GP | None:
        return self.refresh().by_her.get(her_id)
