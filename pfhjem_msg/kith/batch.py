"""Validating many files: the work of ``pfhjem-msg validate`` over a directory.

Many files are spread over worker processes (one per CPU), each with the compiled schemas
it inherits from the parent, so checking a directory of a thousand messages takes a fraction
of the time one process would. Results come back in the order of the files.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfhjem_msg.kith.issues import error
from pfhjem_msg.kith.parse import too_large
from pfhjem_msg.kith.verdict import Options, Verdict, examine

PARALLEL_FROM = 64
"""Fewer files than this are checked in-process: starting workers would cost more."""


@dataclass(frozen=True)
class Report:
    """What is printed about one file: its JSON object, its human lines, and the outcome."""

    data: dict[str, Any]
    lines: list[str]
    valid: bool


def examine_file(path: Path, options: Options) -> Verdict:
    """Examine one file; one over the size limit is refused before a byte of it is read."""
    limit = options.limits.max_bytes
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size > limit:
                return Verdict(str(path), False, issues=too_large(size, options.limits))
            chunks = []
            remaining = limit + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        finally:
            os.close(fd)
    except OSError as exc:
        problem = error("FILE_UNREADABLE", f"cannot read the file: {exc.strerror}")
        return Verdict(str(path), False, issues=[problem])
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if len(data) > limit:  # grew while we read it
        return Verdict(str(path), False, issues=too_large(len(data), options.limits))
    return examine(data, str(path), options)


def _report(path: Path, options: Options) -> Report:
    v = examine_file(path, options)
    return Report(v.as_dict(), v.human_lines(), v.valid)


_WORKER_OPTIONS: Options | None = None


def _work(path: Path) -> Report:
    assert _WORKER_OPTIONS is not None
    return _report(path, _WORKER_OPTIONS)


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def validate_files(paths: Sequence[Path], options: Options, jobs: int | None = None) -> Iterator[Report]:
    jobs = default_jobs() if jobs is None else jobs
    if jobs <= 1 or len(paths) < PARALLEL_FROM or "fork" not in multiprocessing.get_all_start_methods():
        for path in paths:
            yield _report(path, options)
        return
    global _WORKER_OPTIONS
    _WORKER_OPTIONS = options  # inherited by the forked workers, schemas already compiled
    context = multiprocessing.get_context("fork")
    with context.Pool(processes=jobs) as pool:
        yield from pool.imap(_work, paths, chunksize=max(1, min(64, len(paths) // (jobs * 4))))
