"""The GP registry: a patient listed with two GPs gets no GP copy from it (the reason in the
decision, the lines in the problems), identical duplicates are fine, rows with extra
columns are reported, and problems are logged once per load, not per routed message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pfhjem_msg.config import load
from pfhjem_msg.decision import decide
from pfhjem_msg.gpregistry import GPRegistry, parse
from pfhjem_msg.kith.batch import examine_file
from pfhjem_msg.kith.verdict import Options
from pfhjem_msg.store.sqlite import SqliteStore
from tests.conftest import ROOT, SAMPLES, write_config

NATIONAL_ID = "14835841481"  # the patient of dlg11-marked-tema.xml
OTHER = "02914923630"
HEADER = "fnr;gp_her_id;gp_name;office_her_id;office_name\n"
ANNE = "8500011;Anne Allmennsen;8500001;Fjordvik legesenter"
BJORN = "8500012;Bjørn Breiflabb;8500002;Åsli legekontor"


def test_two_gps_for_one_patient_is_a_conflict_reported_by_line() -> None:
    text = HEADER + f"{NATIONAL_ID};{ANNE}\n{OTHER};{ANNE}\n{NATIONAL_ID};{BJORN}\n{NATIONAL_ID};{ANNE}\n"
    load_ = parse(text, "gp.csv")
    assert NATIONAL_ID not in load_.by_fnr and load_.by_fnr[OTHER].her_id == "8500011"
    assert load_.conflicts == {NATIONAL_ID: (2, 4, 5)}
    assert load_.problems == [
        "gp.csv:4: the patient is listed with different GPs (lines 2, 4); no GP copy from the registry "
        "for this patient until the file lists one GP",
        "gp.csv:5: the patient is listed with different GPs (lines 2, 4, 5); no GP copy from the registry "
        "for this patient until the file lists one GP",
    ]
    assert not any(NATIONAL_ID in p or "Bjørn" in p for p in load_.problems)


def test_identical_duplicate_rows_are_fine() -> None:
    load_ = parse(HEADER + f"{NATIONAL_ID};{ANNE}\n{NATIONAL_ID};{ANNE}\n", "gp.csv")
    assert load_.problems == [] and load_.conflicts == {}
    assert load_.by_fnr[NATIONAL_ID].office_her_id == "8500001"


def test_rows_with_extra_columns_are_reported_and_skipped() -> None:
    text = HEADER + f"{NATIONAL_ID};8500011;Allmennsen; Anne;8500001;Fjordvik legesenter\n{OTHER};{ANNE}\n"
    load_ = parse(text, "gp.csv")
    assert load_.problems == ["gp.csv:2: 6 columns, 5 expected (a value with an unquoted ';'?); row skipped"]
    assert NATIONAL_ID not in load_.by_fnr and OTHER in load_.by_fnr


def test_a_conflicting_patient_gets_no_gp_copy_and_the_decision_says_why(tmp_path: Path) -> None:
    settings = load(write_config(tmp_path))
    assert settings.gp_registry is not None
    with settings.gp_registry.open("a", encoding="utf-8") as f:
        f.write(f"{NATIONAL_ID};{BJORN}\n")
    decision = decide(
        examine_file(SAMPLES / "dlg11-marked-tema.xml", Options()),
        settings,
        GPRegistry(settings.gp_registry, log_problems=False),
    )
    routing = decision.as_dict()
    assert [r["role"] for r in routing["routing"]] == ["case_unit"]
    notes = " | ".join(routing["notes"])
    assert "its lines 2, 6 give the patient different fastleger" in notes
    assert "no GP copy" in notes and NATIONAL_ID not in json.dumps(routing, ensure_ascii=False)
    # one reason, not a second one saying the patient has no fastlege at all
    assert "no known fastlege" not in notes
    # the advice is one the replay command accepts for a message that ended done
    assert "replay ID --from-start --force-duplicate" in notes


def _run_once(config: Path) -> list[dict[str, object]]:
    proc = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                          capture_output=True, cwd=ROOT, timeout=120, check=True)  # fmt: skip
    assert NATIONAL_ID.encode() not in proc.stdout + proc.stderr
    return [json.loads(line) for line in proc.stderr.decode().splitlines() if line.startswith("{")]


def test_registry_problems_are_logged_once_per_load_not_per_message(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    registry = tmp_path / "gp-registry.csv"
    with registry.open("a", encoding="utf-8") as f:
        f.write("12345;1;x;2;y\n")  # a bad row: one problem
    seed = (SAMPLES / "dlg11-marked-tema.xml").read_text(encoding="utf-8")
    for i in range(3):
        msg_id = f"5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a00{i + 10}"
        text = seed.replace("5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0001", msg_id)
        (tmp_path / "var" / "inbox" / f"m{i}.xml").write_text(text, encoding="utf-8")
    lines = _run_once(config)
    problems = [line for line in lines if line["event"] == "gp_registry.problem"]
    assert [p["problem"] for p in problems] == [f"{registry}:6: fnr is not 11 digits; row skipped"]
    loaded = [line for line in lines if line["event"] == "gp_registry.loaded"]
    assert len(loaded) == 1 and loaded[0]["problems"] == 1
    store = SqliteStore(tmp_path / "var" / "pfhjem-msg.sqlite3")
    try:
        for mid in (1, 2, 3):
            assert store.message(mid).state == "done"  # type: ignore[union-attr]
            assert not any("not 11 digits" in e.reason for e in store.events(mid))
    finally:
        store.close()

    # a changed file is a new load: its problems are logged again, once
    time.sleep(0.01)
    with registry.open("a", encoding="utf-8") as f:
        f.write(f"{NATIONAL_ID};{BJORN}\n")
    os.utime(registry, ns=(time.time_ns(), time.time_ns()))
    (tmp_path / "var" / "inbox" / "m9.xml").write_text(
        seed.replace("5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0001", "5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0099"),
        encoding="utf-8",
    )
    lines = _run_once(config)
    problems = [str(line["problem"]) for line in lines if line["event"] == "gp_registry.problem"]
    assert len(problems) == 2 and "different GPs (lines 2, 7)" in problems[1]
    store = SqliteStore(tmp_path / "var" / "pfhjem-msg.sqlite3")
    try:
        reasons = " ".join(e.reason for e in store.events(4))
        assert "its lines 2, 7 give the patient different fastleger" in reasons
        assert not any(d.kind == "gp_copy" for d in store.deliveries(4))
    finally:
        store.close()
