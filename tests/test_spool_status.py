"""Refused spool files and files stuck in ``.claimed`` are visible: ``status`` (exit 1 until an
operator acknowledges them), its JSON, and the audit trail."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pfhjem_msg import ops
from pfhjem_msg.cli import main
from pfhjem_msg.config import load
from pfhjem_msg.daemon import Daemon
from pfhjem_msg.store.sqlite import SqliteStore
from tests.conftest import SAMPLES, write_config


def _cli(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main([*args, "--config", str(config)])
    return code, capsys.readouterr().out


def test_symlink_to_a_secret_file_shows_in_status_until_acknowledged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    inbox = tmp_path / "var" / "inbox"
    secret = tmp_path / "secret"
    secret.write_bytes(b"password = hunter2\n")
    os.symlink(secret, inbox / "evil.xml")
    (inbox / "good.xml").write_bytes((SAMPLES / "dlg11-unmarked.xml").read_bytes())
    settings = load(config)
    settings.kith.limits = replace(settings.kith.limits, max_bytes=50_000)
    (inbox / "big.xml").write_bytes(b"x" * 60_000)
    Daemon(settings).run_once()
    code, out = _cli(capsys, config, "status")
    assert code == 1
    assert "evil.xml (symlink)" in out and "big.xml (too_large, 60000 bytes)" in out
    assert "2 spool file(s) refused" in out and "--ack-refused" in out
    assert "hunter2" not in out
    code, out = _cli(capsys, config, "status", "--json")
    data = json.loads(out)
    assert code == 1 and {r["reason"] for r in data["refused_files"]} == {"symlink", "too_large"}
    assert data["spool_claimed"] == {"waiting": 0, "oldest_seconds": None, "error": None}
    code, out = _cli(capsys, config, "status", "--ack-refused")
    assert code == 0 and out.strip().endswith("OK")
    code, out = _cli(capsys, config, "audit")
    assert "acknowledge refused: 2 refused file(s) seen" in out


def test_files_waiting_in_claimed_during_a_store_outage_show_in_status(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    Daemon(load(config)).run_once()  # makes the store
    claimed = tmp_path / "var" / "inbox" / ".claimed"
    claimed.mkdir(exist_ok=True)
    (claimed / "m.xml").write_bytes(b"<MsgHead/>")  # as a scan leaves it when the store fails
    store = SqliteStore(tmp_path / "var" / "pfhjem-msg.sqlite3", create=False)
    try:
        now = datetime.now(UTC)
        fresh = ops.status(store, now, spool=tmp_path / "var" / "inbox")
        assert fresh.claimed is not None and fresh.claimed.count == 1 and fresh.problems == []
        later = ops.status(store, now + timedelta(minutes=10), spool=tmp_path / "var" / "inbox")
        assert any("1 spool file(s) in .claimed not stored for 10 min" in p for p in later.problems)
        assert later.as_dict()["spool_claimed"]["waiting"] == 1
    finally:
        store.close()
