"""A directory delivery that fails tells the operator what went wrong underneath, where, and
what to do next: in the log line (``error_class``, ``destination``) and in ``messages show``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, SAMPLES, write_config


def test_a_case_unit_directory_that_cannot_exist_names_the_os_error_and_the_next_step(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "var" / "case-units").write_text("a file where the case units' directory should be\n")
    (tmp_path / "var" / "inbox" / "a.xml").write_bytes((SAMPLES / "dlg11-marked-tema.xml").read_bytes())
    proc = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=True)  # fmt: skip
    lines = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    (failed,) = [x for x in lines if x["event"] == "delivery.failed"]
    assert failed["error_class"] == "NotADirectoryError"  # not our own wrapper's name
    assert failed["destination"] == f"dir:{tmp_path / 'var' / 'case-units' / 'fjordvik'}"
    assert failed["kind"] == "case_unit" and failed["level"] == "error"

    out = subprocess.run([sys.executable, "-m", "pfhjem_msg", "messages", "show", "1", "--config", str(config)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60).stdout  # fmt: skip
    assert (
        "Not a directory; fix the directory's permissions or path, then `pfhjem-msg messages replay`" in out
    )
