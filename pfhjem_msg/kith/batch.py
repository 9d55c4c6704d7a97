"""Validating many files: the work of ``pfhjem-msg validate`` over a directory.

Many files are split into chunks shared between this process and forked helpers (one per
further CPU). The helpers inherit the compiled schemas, and this process works on its own
chunks instead of waiting, so a directory of a thousand messages takes about 1/N of the time
one process would. Results come back in the order of the files, as soon as each chunk is done;
a helper that dies only costs time: its chunks are then checked here.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_FRAME = struct.Struct("!Q")
_PIPE_BYTES = 1 << 20
"""Room for several chunks in flight, so a helper rarely waits for this process to print."""


class _Helper:
    """A forked process checking every ``jobs``-th chunk and sending the reports back, one
    pickled frame per chunk, in order."""

    def __init__(self, chunks: list[Sequence[Path]], options: Options) -> None:
        import fcntl  # POSIX only, like fork itself

        read_end, write_end = os.pipe()
        if hasattr(fcntl, "F_SETPIPE_SZ"):
            with contextlib.suppress(OSError):  # the default size only means more waiting
                fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - runs in the child, which never returns
            os.close(read_end)
            _serve(chunks, options, write_end)
        os.close(write_end)
        self.pipe: BinaryIO | None = os.fdopen(read_end, "rb")

    def next_chunk(self) -> list[Report] | None:
        """The next chunk's reports, or None when the helper has died (then it is asked no more)."""
        if self.pipe is None:
            return None
        header = self.pipe.read(_FRAME.size)
        body = self.pipe.read(_FRAME.unpack(header)[0]) if len(header) == _FRAME.size else b""
        if not body:
            self.stop()
            return None
        reports: list[Report] = pickle.loads(body)  # noqa: S301 - written by our own forked child
        return reports

    def stop(self) -> None:
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = 0


def _serve(chunks: list[Sequence[Path]], options: Options, fd: int) -> None:  # pragma: no cover
    code = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                body = pickle.dumps([_report(p, options) for p in chunk], pickle.HIGHEST_PROTOCOL)
                out.write(_FRAME.pack(len(body)))
                out.write(body)
                out.flush()
    except BaseException:  # the parent notices the missing frames and checks those files itself
        code = 1
    os._exit(code)


def validate_files(paths: Sequence[Path], options: Options, jobs: int | None = None) -> Iterator[Report]:
    jobs = default_jobs() if jobs is None else jobs
    # Forking beside other threads could leave a helper stuck on a lock one of them held.
    if jobs <= 1 or len(paths) < PARALLEL_FROM or not hasattr(os, "fork") or threading.active_count() > 1:
        for path in paths:
            yield _report(path, options)
        return
    size = max(8, min(64, len(paths) // (jobs * 4)))
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
    helpers: list[_Helper] = []
    try:
        helpers.extend(_Helper(chunks[k::jobs], options) for k in range(1, jobs))
        for i, chunk in enumerate(chunks):
            owner = i % jobs
            reports = helpers[owner - 1].next_chunk() if owner else None
            if reports is None:
                reports = [_report(p, options) for p in chunk]
            yield from reports
    finally:
        for helper in helpers:
            helper.stop()
