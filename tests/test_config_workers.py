"""The configuration is loaded once, by the daemon, and handed to the worker processes: a pool
restarted after the file was edited, broken or removed still decides with the daemon's
settings."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pfhjem_msg.config import ConfigError, load
from pfhjem_msg.drafting import Draft, Drafter
from pfhjem_msg.workers import DraftPool, Job

from .conftest import SAMPLES, write_config

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="worker processes are tested on POSIX")

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
NAMES = ("dlg11-marked-tema.xml", "dlg11-unmarked.xml", "epi12-marked-comment.xml")

EDITED = """
state_dir = "var"
[apprec]
unknown_receiver = "hold"
[[municipality]]
name = "Bakkedal kommune"
her_ids = ["8500001"]
case_unit = { her_id = "8500001", name = "Servicetorget", transport = "dir" }
"""


def _jobs() -> list[Job]:
    return [((SAMPLES / name).read_bytes(), i + 1, NOW) for i, name in enumerate(NAMES)]


def _outcome(drafts: list[object]) -> list[tuple[str, ...]]:
    """Each message's steps and where its deliveries go."""
    out = []
    for d in drafts:
        assert isinstance(d, Draft), d
        out.append(
            tuple(s.to_state for s in d.change.steps)
            + tuple(f"{x.kind}:{x.destination}:{x.her_id}" for x in d.change.deliveries)
        )
    return out


@pytest.mark.parametrize("change", ["edited", "broken", "removed"])
def test_a_restarted_pool_decides_with_the_daemons_settings(tmp_path: Path, change: str) -> None:
    config = write_config(tmp_path, workers=2)
    settings = load(config)
    expected = _outcome([Drafter(settings).safe_draft(*job) for job in _jobs()])
    if change == "edited":
        config.write_text(EDITED, encoding="utf-8")
        reread = _outcome([Drafter(load(config)).safe_draft(*job) for job in _jobs()])
        assert reread != expected, "the edit must change decisions, or this test proves nothing"
    elif change == "broken":
        config.write_text("[retention]\npaylod_days = 180\n", encoding="utf-8")
        with pytest.raises(ConfigError):
            load(config)
    else:
        config.unlink()
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)  # the daemon runs threads: the new pool is spawned
    other.start()
    pool = DraftPool(settings, workers=2)
    try:
        pool.ready()
        first = _outcome([d for chunk in pool.draft(_jobs(), chunk=1) for d in chunk])
        pool._reset()  # what the pool does after a worker died
        assert pool._executor()._mp_context.get_start_method() == "spawn"
        pool.ready()
        second = _outcome([d for chunk in pool.draft(_jobs(), chunk=1) for d in chunk])
    finally:
        stop.set()
        other.join()
        pool.close()
    assert first == second == expected
