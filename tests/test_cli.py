"""The command line as a user runs it: real subprocesses, exit codes, JSON shape, no patient
data in what it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, SAMPLES, sample_table


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pfhjem_msg", *args], capture_output=True, text=True, cwd=cwd
    )


def test_validate_exit_codes() -> None:
    assert run("validate", str(SAMPLES / "dlg11-marked-tema.xml")).returncode == 0
    assert run("validate", str(SAMPLES / "broken-msgid-not-uuid.xml")).returncode == 1
    assert run("validate", str(SAMPLES / "broken-empty.xml")).returncode == 1
    missing = run("validate", "no/such/file.xml")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert run("validate").returncode == 2
    assert run("frobnicate").returncode == 2


def test_validate_json_shape() -> None:
    result = run("validate", "--json", str(SAMPLES))
    assert result.returncode == 1
    verdicts = json.loads(result.stdout)
    assert len(verdicts) == len([r for r in sample_table() if r.file.endswith(".xml")])
    keys = {"file", "well_formed", "valid", "standard", "msg_type", "msg_id", "signature", "issues"}
    for v in verdicts:
        assert set(v) == keys
        assert v["signature"] in ("absent", "valid", "invalid")
        for issue in v["issues"]:
            assert set(issue) == {"severity", "code", "line", "path", "message"}
    by_name = {Path(v["file"]).name: v for v in verdicts}
    assert by_name["epi12-marked-msgdescr.xml"]["standard"] == "epikrise-1.2"
    assert by_name["signed-valid.xml"]["signature"] == "valid"


def test_validate_human_output_is_compiler_like() -> None:
    result = run("validate", str(SAMPLES / "broken-schema-order.xml"))
    lines = result.stdout.splitlines()
    assert lines[0].endswith(
        "INVALID dialogmelding-1.1 DIALOG_HELSEFAGLIG 5f0c0035-6b1d-4c8e-9a2f-7d3e1b0a0035"
    )
    assert any(":" in line and "error: [XSD_INVALID]" in line for line in lines[1:])
    assert lines[-1] == "1 file(s): 0 valid, 1 invalid"


def test_apprec_command() -> None:
    ok = run("apprec", str(SAMPLES / "dlg11-marked-tema.xml"))
    assert ok.returncode == 0 and ok.stdout.startswith("<?xml") and '<Status V="1"' in ok.stdout
    none = run("apprec", str(SAMPLES / "apprec11-ok.xml"))
    assert none.returncode == 1 and "no AppRec is sent for an AppRec" in none.stderr and none.stdout == ""
    strict = run("apprec", "--reject-schema-errors", str(SAMPLES / "broken-schema-order.xml"))
    assert strict.returncode == 0 and 'V="T02"' in strict.stdout
    assert run("apprec", "missing.xml").returncode == 2


def test_module_and_console_script_agree() -> None:
    version = run("--version")
    assert version.returncode == 0 and version.stdout.startswith("pfhjem-msg ")


def test_run_with_demo_config() -> None:
    result = run("run", "--config", str(ROOT / "config" / "demo.toml"), "--once")
    assert result.returncode == 0, result.stderr


def test_bad_config_is_reported_whole(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'state_dir = "var"\n[kith]\nschemas = "nowhere"\nmax_depth = -1\n[apprec]\nunknown_receiver = "drop"\n'
    )
    result = run("run", "--config", str(bad))
    assert result.returncode == 2
    assert "3 problem(s)" in result.stderr
    for key in ("kith.schemas", "kith.max_depth", "apprec.unknown_receiver"):
        assert key in result.stderr
    assert "Traceback" not in result.stderr


def test_output_never_carries_patient_data() -> None:
    from tools.make_samples import PATIENTS

    result = run("validate", "--json", str(SAMPLES), *map(str, SAMPLES.glob("*.eml")))
    human = run("validate", str(SAMPLES))
    for person in PATIENTS:
        for secret in (person.fnr, person.family, person.given, person.birth):
            assert secret not in result.stdout and secret not in human.stdout
