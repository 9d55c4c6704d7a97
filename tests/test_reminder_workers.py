"""Follow-up reminders are built in the drafting workers, like messages: the sweep on the
daemon's thread only decides which are due and queues each once; reading the original,
building the Dialogmelding and signing it happen in a worker process."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pfhjem_msg.config import load
from pfhjem_msg.daemon import Daemon
from pfhjem_msg.drafting import Crash, ReminderJob
from pfhjem_msg.kith import gpcopy
from pfhjem_msg.kith.parse import Limits, parse_xml
from tests.conftest import SAMPLES, write_config

SEED = "dlg11-marked-tema.xml"  # diagnosis 12.09.2026: the SP2 window opens 2026-12-12
HUB_COORDINATOR = 'kreftkoordinator = { her_id = "8300020", name = "Kreftkoordinator", transport = "hub" }'


def _config(tmp_path: Path, workers: int) -> Path:
    config = write_config(tmp_path, workers=workers)
    text = config.read_text(encoding="utf-8")
    marker = 'path = "var/case-units/fjordvik" }'
    config.write_text(text.replace(marker, marker + "\n" + HUB_COORDINATOR, 1), encoding="utf-8")
    (tmp_path / "var" / "inbox" / "a.xml").write_bytes((SAMPLES / SEED).read_bytes())
    return config


def _run(config: Path, day: datetime) -> Daemon:
    daemon = Daemon(load(config), clock=lambda: day)
    daemon.run_once()
    return daemon


def _stop(daemon: Daemon) -> None:
    daemon.pipeline.close()
    daemon.store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="worker processes are tested on POSIX")
def test_reminder_is_built_in_a_worker_not_on_the_daemons_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, workers=2)
    _stop(_run(config, datetime(2026, 10, 6, 9, tzinfo=UTC)))
    built_in = tmp_path / "built-in"
    real = gpcopy.build_dialog

    def recorded(*args: Any, **kwargs: Any) -> tuple[str, bytes]:
        with built_in.open("a", encoding="utf-8") as f:  # a worker forked after this patch records here
            f.write(f"{os.getpid()}\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(gpcopy, "build_dialog", recorded)
    daemon = Daemon(load(config), clock=lambda: datetime(2026, 12, 12, 9, tzinfo=UTC))
    try:
        assert daemon.pipeline.sweep_followups() == 1
        assert daemon.pipeline.sweep_followups() == 0  # queued once
        daemon.pipeline.deliver_due()
    finally:
        _stop(daemon)
    pids = built_in.read_text(encoding="utf-8").split() if built_in.exists() else []
    assert str(os.getpid()) not in pids, "the daemon's own process built the reminder"
    (reminder,) = (tmp_path / "var" / "outbox").glob("reminder-1-sp2-open-*.xml")
    doc = parse_xml(reminder.read_bytes(), Limits()).document
    assert doc is not None and b"8300020" in reminder.read_bytes()


def test_a_reminder_whose_building_fails_is_not_queued_and_comes_next_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, workers=1)
    _stop(_run(config, datetime(2026, 10, 6, 9, tzinfo=UTC)))
    daemon = Daemon(load(config), clock=lambda: datetime(2026, 12, 12, 9, tzinfo=UTC))
    try:
        drafter = daemon.pipeline.drafts.local
        assert drafter is not None
        real = drafter.reminder

        def broken(job: ReminderJob) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(drafter, "reminder", broken)
        job_result = drafter.safe_reminder  # the crash is a value, never an exception out of the sweep
        assert daemon.pipeline.sweep_followups() == 0
        (f,) = daemon.store.open_followups(until=datetime(2027, 12, 31).date())[:1]
        assert f.opened_reminder_at is None, "a reminder that was not built is not noted as sent"
        assert isinstance(job_result(ReminderJob(f, "open", None, datetime(2026, 12, 12, tzinfo=UTC))), Crash)
        monkeypatch.setattr(drafter, "reminder", real)
        assert daemon.pipeline.sweep_followups() == 1
    finally:
        _stop(daemon)
