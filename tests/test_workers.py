"""The drafting workers: forked with everything loaded when the daemon starts, and a worker
that dies mid-batch costs a fresh (spawned) pool, never a message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pfhjem_msg.config import load
from pfhjem_msg.drafting import Draft, Drafter
from pfhjem_msg.workers import DraftPool, Job

from .conftest import ROOT, SAMPLES, write_config

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="worker processes are tested on POSIX")

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
NAMES = ("dlg11-marked-tema.xml", "dlg11-unmarked.xml", "epi12-marked-comment.xml", "dlg10-notat-marked.xml")


def _jobs(count: int) -> list[Job]:
    raws = [(SAMPLES / name).read_bytes() for name in NAMES]
    return [(raws[i % len(raws)], i + 1, NOW) for i in range(count)]


def _states(drafts: list[Draft | object]) -> list[str]:
    return [d.change.steps[-1].to_state if isinstance(d, Draft) else repr(d) for d in drafts]


def test_workers_draft_what_the_daemon_would_draft_itself(tmp_path: Path) -> None:
    settings = load(write_config(tmp_path, workers=2))
    local = Drafter(settings)
    jobs = _jobs(12)
    pool = DraftPool(settings, workers=2)
    try:
        pool.ready()
        drafts = [d for chunk in pool.draft(jobs, chunk=4) for d in chunk]
    finally:
        pool.close()
    assert _states(drafts) == _states([local.safe_draft(*job) for job in jobs])
    assert all(isinstance(d, Draft) for d in drafts)


def test_a_worker_killed_mid_batch_costs_no_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(write_config(tmp_path, workers=2))
    jobs = _jobs(400)
    pool = DraftPool(settings, workers=2)
    resets: list[bool] = []
    real_reset = DraftPool._reset

    def counted(self: DraftPool) -> None:
        resets.append(True)
        real_reset(self)

    monkeypatch.setattr(DraftPool, "_reset", counted)
    try:
        pool.ready()
        executor = pool._executor()
        victim = next(iter(executor._processes))
        results = pool.draft(jobs, chunk=2)
        os.kill(victim, signal.SIGKILL)
        drafts = [d for chunk in results for d in chunk]
        assert len(drafts) == len(jobs)
        assert all(isinstance(d, Draft) for d in drafts), _states(drafts)
        assert resets, "the pool never broke: the worker was killed after the batch"
        assert victim not in pool._executor()._processes
    finally:
        pool.close()


def test_a_pool_started_beside_other_threads_is_spawned(tmp_path: Path) -> None:
    """Forking while other threads hold locks could leave a worker stuck on one."""
    settings = load(write_config(tmp_path, workers=2))
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    pool = DraftPool(settings, workers=2)
    try:
        pool.ready()
        method = pool._executor()._mp_context.get_start_method()
        drafts = [d for chunk in pool.draft(_jobs(4)) for d in chunk]
    finally:
        stop.set()
        other.join()
        pool.close()
    assert method == "spawn"
    assert all(isinstance(d, Draft) for d in drafts)


SPAWNED_POOL = """
import sys, threading
from pathlib import Path
from pfhjem_msg.config import load
from pfhjem_msg.logs import configure
from pfhjem_msg.workers import DraftPool
configure("info", json=True)
stop = threading.Event()
other = threading.Thread(target=stop.wait)
other.start()  # so the pool is spawned, as after a reload or a worker's crash
pool = DraftPool(load(Path(sys.argv[1])), workers=2)
try:
    pool.ready()
finally:
    stop.set()
    other.join()
    pool.close()
"""


def test_spawned_workers_log_json_lines_like_the_daemon(tmp_path: Path) -> None:
    """A spawned worker starts without the daemon's log set-up: unless handed it, it wrote
    console-style lines into the journal between the daemon's JSON ones."""
    config = write_config(tmp_path, workers=2)
    assert load(config).gp_registry is not None  # each worker logs the registry's load
    proc = subprocess.run([sys.executable, "-c", SPAWNED_POOL, str(config)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=True)  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    events = [json.loads(line)["event"] for line in lines]  # every line is JSON
    assert events.count("gp_registry.loaded") == 2, proc.stderr
