"""One thread owns the pipeline: the scheduler only marks periodic work due, and the
pipeline's thread does it between rounds, never beside one (a real daemon, store and spool)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pfhjem_msg.config import load
from pfhjem_msg.daemon import Daemon
from tests.conftest import SAMPLES, free_port, write_config


def test_periodic_jobs_run_on_the_pipeline_thread_between_rounds(tmp_path: Path) -> None:
    extra = f'[followups]\nsweep_minutes = 0.002\n[metrics]\naddress = "127.0.0.1:{free_port()}"\nrefresh_seconds = 0.1\n'
    daemon = Daemon(load(write_config(tmp_path, extra=extra)))
    seen: list[tuple[str, str, bool]] = []

    def spy(name: str, real: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            seen.append((name, threading.current_thread().name, daemon._round_began is None))
            return real()

        return run

    daemon.pipeline.sweep_followups = spy("followups", daemon.pipeline.sweep_followups)  # type: ignore[method-assign]
    daemon.refresh_metrics = spy("metrics", daemon.refresh_metrics)  # type: ignore[method-assign]
    for sample in sorted(SAMPLES.glob("*.xml"))[:5]:  # rounds with work in them, beside the jobs
        (tmp_path / "var" / "inbox" / sample.name).write_bytes(sample.read_bytes())

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(daemon.serve(stop))
        for _ in range(200):
            await asyncio.sleep(0.05)
            names = {s[0] for s in seen}
            if {"followups", "metrics"} <= names and len(seen) >= 4:
                break
        stop.set()
        await task

    asyncio.run(scenario())
    assert {"followups", "metrics"} <= {s[0] for s in seen}, seen
    assert all(thread.startswith("pipeline") for _, thread, _ in seen), seen
    assert all(between for _, _, between in seen), "a periodic job ran while a round was in hand"
