"""Routing decisions with the demo configuration, and their bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from pfhjem_msg.config import load
from pfhjem_msg.decision import decide
from pfhjem_msg.errors import ConfigError
from pfhjem_msg.gpregistry import GPRegistry
from pfhjem_msg.kith.apprec import AppRecPolicy
from pfhjem_msg.kith.batch import examine_file
from pfhjem_msg.kith.verdict import Options, examine
from pfhjem_msg.pathway import add_months, followup_windows, parse_norwegian_date
from tests.conftest import ROOT, SAMPLES, sample_table
from tools import make_samples as ms

DEMO = ROOT / "config" / "demo.toml"


@pytest.fixture(scope="module")
def settings():  # type: ignore[no-untyped-def]
    return load(DEMO)


@pytest.fixture(scope="module")
def registry(settings):  # type: ignore[no-untyped-def]
    return GPRegistry(settings.gp_registry)


def _decide(name: str, settings, registry, options: Options | None = None):  # type: ignore[no-untyped-def]
    return decide(examine_file(SAMPLES / name, options or Options()), settings, registry).as_dict()


def roles(d: dict) -> list[str]:  # type: ignore[type-arg]
    return [r["role"] for r in d["routing"]]


def test_marked_goes_to_case_unit_and_gp(settings, registry) -> None:  # type: ignore[no-untyped-def]
    d = _decide("dlg11-marked-tema.xml", settings, registry)
    assert d["municipality"] == "Fjordvik kommune"
    assert roles(d) == ["case_unit", "gp"]
    gp = d["routing"][1]
    assert gp["her_id"] == ms.GP[2] and gp["transport"] == "hub" and "registry" in gp["reason"]
    assert d["routing"][0]["her_id"] == "8300010"


def test_unmarked_goes_to_default_only(settings, registry) -> None:  # type: ignore[no-untyped-def]
    d = _decide("dlg11-unmarked.xml", settings, registry)
    assert roles(d) == ["default"] and "not marked" in d["routing"][0]["reason"]


def test_second_municipality(settings, registry) -> None:  # type: ignore[no-untyped-def]
    d = _decide("dlg11-marked-municipality-b.xml", settings, registry)
    assert d["municipality"] == "Åsli kommune" and d["routing"][0]["her_id"] == "8400010"


def test_gp_sources_in_the_message(settings, registry) -> None:  # type: ignore[no-untyped-def]
    epi = _decide("epi12-marked-gp-relation.xml", settings, registry)
    assert "PatRelHCP" in epi["routing"][1]["reason"]
    note = _decide("dlg11-marked-gp-role.xml", settings, registry)
    assert "RoleToPatient 6" in note["routing"][1]["reason"]


def test_no_second_copy_when_gp_received_original(settings, registry) -> None:  # type: ignore[no-untyped-def]
    for name in ("dlg11-marked-gp-copy.xml", "epi12-marked-gp-copydest.xml"):
        d = _decide(name, settings, registry)
        assert roles(d) == ["case_unit"], name
        assert any("already received" in n for n in d["notes"]), name


def test_no_gp_is_a_normal_outcome(settings, registry) -> None:  # type: ignore[no-untyped-def]
    d = _decide("epi12-marked-comment.xml", settings, registry)  # patient not in the registry
    assert roles(d) == ["case_unit"] and d["routing_action"] == "deliver"
    assert any("no GP copy" in n for n in d["notes"])


def test_unknown_receiver_policy(settings, registry) -> None:  # type: ignore[no-untyped-def]
    xml = ms.dialog11(ms.uid(80), ms.PHRASE, "tekst", receiver=ms.org("Annen kommune", "8999999")).encode()
    verdict = examine(xml, "unknown")
    rejected = decide(verdict, settings, registry)
    assert rejected.apprec.status == "2" and [c for c, _ in rejected.apprec.errors] == ["E21"]
    assert rejected.routing.action == "reject"
    held_settings = replace(settings, apprec=replace(settings.apprec, unknown_receiver="hold"))
    held = decide(verdict, held_settings, registry)
    assert held.routing.action == "hold" and not held.apprec.due


def test_two_patients_are_held(settings, registry) -> None:  # type: ignore[no-untyped-def]
    xml = ms.dialog11(ms.uid(81), ms.PHRASE, "tekst")
    two = xml.replace(
        "</Patient>", "</Patient>" + ms.patient_xml(ms.PATIENTS[1]).replace("<Patient>", "<Patient>", 1), 1
    )
    d = decide(examine(two.encode(), "two"), replace(settings, apprec=AppRecPolicy()), registry)
    assert d.apprec.status == "2"  # E36: more than one patient is not identification
    assert d.routing.action == "reject"


def test_patient_without_national_id_is_noted(settings, registry) -> None:  # type: ignore[no-untyped-def]
    xml = ms.msghead(("DIALOG_HELSEFAGLIG", "Helsefaglig dialog"), ms.uid(82), ms.note11(ms.PHRASE, "tekst"),
                     patient=ms.patient_xml(ms.PATIENTS[0], with_id=False), sender=ms.hospital_hp(),
                     receiver=ms.muni())  # fmt: skip
    d = decide(examine(xml.encode(), "noid"), settings, registry)
    assert d.routing.action == "deliver"
    assert any("no national id" in n for n in d.routing.notes)


def test_registry_reloads_and_reports_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "gp.csv"
    fnr = ms.PATIENTS[3].fnr
    path.write_text("fnr;gp_her_id;gp_name;office_her_id;office_name\n12345;1;x;2;y\n")
    reg = GPRegistry(path)
    assert reg.by_fnr(fnr) is None
    assert reg.problems == [f"{path}:2: fnr is not 11 digits; row skipped"]
    time.sleep(0.01)
    path.write_text(
        f"fnr,gp_her_id,gp_name,office_her_id,office_name\n{fnr},8500011,Lege,8500001,Kontor\nbad\n"
    )
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    gp = reg.by_fnr(fnr)
    assert gp is not None and gp.office_her_id == "8500001"
    assert reg.problems == [f"{path}:3: 1 columns, 5 expected; row skipped"]


def test_registry_header_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "gp.csv"
    bad.write_text("a;b\n1;2\n")
    with pytest.raises(ConfigError, match=r"gp.csv:1: .*header"):
        GPRegistry(bad)
    with pytest.raises(ConfigError, match="cannot be read"):
        GPRegistry(tmp_path / "missing.csv")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[gp_registry]\nfile = "missing.csv"\n')
    with pytest.raises(ConfigError, match=r"gp_registry\.file"):
        load(cfg)


def test_bad_municipality_config_is_reported(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[[municipality]]\nname = "A"\nher_ids = [123]\n[[municipality]]\nher_ids = ["1"]\n'
        '[[municipality]]\nname = "C"\nher_ids = ["5"]\ncase_unit = { name = "X", transport = "fax" }\n'
    )
    with pytest.raises(ConfigError) as exc:
        load(cfg)
    text = str(exc.value)
    assert "municipality[0].her_ids" in text and "municipality[1].name" in text
    assert "municipality[2].case_unit.transport" in text


def test_dates_and_windows() -> None:
    assert parse_norwegian_date("12.09.2026") == date(2026, 9, 12)
    assert parse_norwegian_date("3.9.26") == date(2026, 9, 3)
    assert parse_norwegian_date("2026-09-03") == date(2026, 9, 3)
    assert parse_norwegian_date("3. september 2026") == date(2026, 9, 3)
    assert parse_norwegian_date("3 sep. 2026") == date(2026, 9, 3)
    assert parse_norwegian_date("31.02.2026") is None
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    sp2, sp3 = followup_windows(date(2026, 11, 30), "diagnosis")
    assert (sp2.start, sp2.end) == (date(2027, 2, 28), date(2027, 3, 30))
    assert (sp3.start, sp3.end) == (date(2027, 11, 30), date(2028, 5, 30))


def test_contact_point_from_text_and_no_windows_after_sp1(settings, registry) -> None:  # type: ignore[no-untyped-def]
    xml = ms.dialog11(ms.uid(83), ms.PHRASE, "Samtale ved samhandlingspunkt 2 er gjennomført.")
    d = decide(examine(xml.encode(), "sp2"), settings, registry).as_dict()
    assert d["contact_point"] == 2 and d["followups"] == []


def test_estimated_anchor_without_diagnosis_date(settings, registry) -> None:  # type: ignore[no-untyped-def]
    xml = ms.dialog11(ms.uid(84), ms.PHRASE, "Behov kartlagt.")
    d = decide(examine(xml.encode(), "est"), settings, registry).as_dict()
    assert d["diagnosis_date"] is None
    assert [w["anchor"] for w in d["followups"]] == ["estimated", "estimated"]
    assert d["followups"][0]["window_start"] == "2027-01-05"


def test_explain_on_every_sample() -> None:
    for row in sample_table():
        result = subprocess.run([sys.executable, "-m", "pfhjem_msg", "explain", "--json", "--config", str(DEMO),
                                 str(SAMPLES / row.file)], capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 0, (row.file, result.stderr)
        d = json.loads(result.stdout)
        keys = {"file", "standard", "msg_type", "msg_id", "marked", "marking", "not_marked_reason", "contact_point",
                "diagnosis_date", "municipality", "routing", "apprec", "followups"}  # fmt: skip
        assert keys <= set(d)
        assert d["marked"] is row.marked, row.file
        for m in d["marking"]:
            assert set(m) == {"where", "text", "rule"}
        for r in d["routing"]:
            assert set(r) == {"role", "her_id", "name", "transport", "reason"}
        for w in d["followups"]:
            assert set(w) == {"point", "window_start", "window_end", "anchor"}
        for p in ms.PATIENTS:
            assert p.fnr not in result.stdout and p.family not in result.stdout


def test_explain_human_output() -> None:
    result = subprocess.run([sys.executable, "-m", "pfhjem_msg", "explain", "--config", str(DEMO),
                             str(SAMPLES / "epi12-marked-gp-relation.xml")], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0
    assert "marked:         yes" in result.stdout
    assert "rule full" in result.stdout and "follow-up:      SP2" in result.stdout
