"""`validate` over many files: forked helpers share the work, results keep the files' order,
and a helper that dies costs time, never a verdict."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from pfhjem_msg.kith import batch
from pfhjem_msg.kith.verdict import Options

from .conftest import sample_files

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forked helpers need os.fork")


def _many() -> list[Path]:
    files = sample_files()
    return (files * (1 + 3 * batch.PARALLEL_FROM // len(files)))[: 3 * batch.PARALLEL_FROM]


def test_helpers_give_the_same_reports_in_the_same_order(options: Options) -> None:
    files = _many()
    serial = list(batch.validate_files(files, options, jobs=1))
    for jobs in (2, 3):
        parallel = list(batch.validate_files(files, options, jobs=jobs))
        assert [r.data for r in parallel] == [r.data for r in serial]
        assert [r.lines for r in parallel] == [r.lines for r in serial]
    assert any(not r.valid for r in serial) and any(r.valid for r in serial)


def test_a_helper_that_dies_costs_no_verdict(options: Options, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _many()
    started: list[int] = []
    real_init = batch._Helper.__init__

    def init(self: batch._Helper, chunks: list[list[Path]], opts: Options) -> None:
        real_init(self, chunks, opts)
        started.append(self.pid)
        os.kill(self.pid, signal.SIGKILL)  # dies before it sends a single chunk

    monkeypatch.setattr(batch._Helper, "__init__", init)
    reports = list(batch.validate_files(files, options, jobs=2))
    assert len(started) == 1
    assert [r.data["file"] for r in reports] == [str(p) for p in files]
    with pytest.raises(ChildProcessError):
        os.waitpid(started[0], os.WNOHANG)  # reaped, not left as a zombie


def test_stopping_early_leaves_no_helper_behind(options: Options, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    real_init = batch._Helper.__init__

    def init(self: batch._Helper, chunks: list[list[Path]], opts: Options) -> None:
        real_init(self, chunks, opts)
        started.append(self.pid)

    monkeypatch.setattr(batch._Helper, "__init__", init)
    reports = batch.validate_files(_many(), options, jobs=2)
    next(reports)
    reports.close()  # the caller stops reading (a broken pipe, Ctrl-C)
    assert len(started) == 1
    with pytest.raises(ChildProcessError):
        os.waitpid(started[0], os.WNOHANG)


def test_no_helpers_beside_other_threads(options: Options, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    monkeypatch.setattr(batch._Helper, "__init__", lambda *_: started.append(1))
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        reports = list(batch.validate_files(_many(), options, jobs=2))
    finally:
        stop.set()
        other.join()
    assert not started and len(reports) == len(_many())
