"""``run --once`` takes what was copied into the spool just before, and says what it left and
why (real ``pfhjem-msg run --once`` subprocesses, real files)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, SAMPLES, write_config


def _run_once(config: Path) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    result = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    return result, lines


def _event(lines: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [line for line in lines if line.get("event") == name]
    assert found, f"no {name} in the log"
    return found[-1]


def test_run_once_right_after_a_copy_takes_the_file_and_says_so(tmp_path: Path) -> None:
    config = write_config(tmp_path, settle=1.5)
    inbox = tmp_path / "var" / "inbox"
    shutil.copy(SAMPLES / "dlg11-marked-tema.xml", inbox / "copied.xml")  # mtime: now
    result, lines = _run_once(config)
    assert result.returncode == 0, result.stderr
    assert not (inbox / "copied.xml").exists()
    assert list((tmp_path / "var" / "outbox").glob("apprec-*.xml"))
    done = _event(lines, "daemon.once_done")
    assert done["spool_taken"] == 1 and done["spool_left"] == 0


def test_run_once_leaves_a_file_still_being_written_and_says_why(tmp_path: Path) -> None:
    config = write_config(tmp_path, settle=1.0)
    inbox = tmp_path / "var" / "inbox"
    (inbox / "upload.xml.part").write_bytes(b"<MsgHead")
    growing = inbox / "growing.xml"
    growing.write_bytes(b"<MsgHead")
    stop = threading.Event()

    def keep_writing() -> None:
        while not stop.is_set():
            with growing.open("ab") as f:
                f.write(b" ")
            time.sleep(0.1)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    started = time.monotonic()
    try:
        result, lines = _run_once(config)
    finally:
        stop.set()
        writer.join()
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30  # settle_seconds plus a margin, not for ever
    assert growing.exists() and (inbox / "upload.xml.part").exists()
    left = _event(lines, "spool.left")
    assert left["left_still_changing"] == 1 and left["left_temporary_name"] == 1 and left["taken"] == 0
    assert left["level"] == "warning" and "still changing" in left["why"]
