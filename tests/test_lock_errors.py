"""A state directory the daemon cannot create is one line naming it and what to do, and exit
2, never a traceback (as when the service user may not write where state_dir points)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pfhjem_msg.errors import StoreError
from pfhjem_msg.lock import StoreLock
from tests.conftest import ROOT, write_config


def test_a_state_directory_that_cannot_be_created_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory\n")
    with pytest.raises(StoreError) as caught:
        StoreLock.acquire(tmp_path / "afile" / "state")
    text = str(caught.value)
    assert f"cannot create the state directory {tmp_path / 'afile' / 'state'}: Not a directory" in text
    assert f"(uid {os.geteuid()}), mode 0700, or correct state_dir" in text


def test_run_once_on_such_a_state_directory_says_so_in_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "afile").write_text("not a directory\n")
    text = config.read_text(encoding="utf-8").replace('state_dir = "var"', 'state_dir = "afile/state"')
    config.write_text(text, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if not x.startswith("{")]
    assert line.startswith("pfhjem-msg: cannot create the state directory ") and "correct state_dir" in line
