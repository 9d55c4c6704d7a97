"""Every file in samples/ and ../shared/real-samples/ is read without a crash, classified as
its provenance says, and gets an AppRec (when one is due) that the official schema accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pfhjem_msg.kith import apprec
from pfhjem_msg.kith.batch import examine_file
from pfhjem_msg.kith.parse import Limits, parse_xml
from pfhjem_msg.kith.schemas import SchemaSet
from pfhjem_msg.kith.verdict import Options
from tests.conftest import real_sample_files, sample_files

REAL_KINDS = {
    "apprec1.0": "apprec-1.0",
    "apprec1.1": "apprec-1.1",
    "Apprec10": "apprec-1.0",
    "Apprec11": "apprec-1.1",
    "apprecError": "apprec-1.0",
    "apprecOK": "apprec-1.0",
    "AppRec-v1": "apprec-1.0",
    "dlg1.0": "dialogmelding-1.0",
    "dlg1.1": "dialogmelding-1.1",
    "epikrise1_1": "epikrise-1.1",
    "epikrise_v1.2": "epikrise-1.2",
    "padm2__": "dialogmelding-1.0",
}


@pytest.mark.skipif(
    not real_sample_files(), reason="../shared/real-samples is absent: no real messages to classify"
)
@pytest.mark.parametrize("path", real_sample_files() or [Path("absent.xml")], ids=lambda p: p.name)
def test_real_sample_is_classified(path: Path, options: Options) -> None:
    verdict = examine_file(path, options)
    assert verdict.well_formed
    expected = next((std for key, std in REAL_KINDS.items() if key in path.name), None)
    if expected and "migversion" not in path.name and "invalid-version" not in path.name:
        assert verdict.standard == expected
    if verdict.valid and verdict.message is not None and not verdict.message.is_apprec:
        assert verdict.message.sender is not None


@pytest.mark.parametrize("path", real_sample_files() + sample_files(), ids=lambda p: p.name)
def test_apprec_validates_against_official_schema(
    path: Path, options: Options, official_schemas: SchemaSet
) -> None:
    for policy in (apprec.AppRecPolicy(), apprec.AppRecPolicy(reject_schema_errors=True)):
        decision = apprec.decide(examine_file(path, options), policy)
        if not decision.due:
            continue
        assert decision.xml is not None
        parsed = parse_xml(decision.xml, Limits())
        assert parsed.document is not None
        assert official_schemas.validate(parsed.document) == []
        assert decision.status in ("1", "2")
        assert (decision.status == "1") == (not decision.errors)


def test_apprec_version_follows_payload(options: Options) -> None:
    by_standard = {}
    for path in sample_files():
        verdict = examine_file(path, options)
        decision = apprec.decide(verdict)
        if decision.due:
            by_standard.setdefault(verdict.standard, set()).add(decision.version)
    assert by_standard["dialogmelding-1.1"] == {"1.1"}
    assert by_standard["dialogmelding-1.0"] == {"1.0"}
    assert by_standard["epikrise-1.2"] == {"1.1"}
    assert by_standard["epikrise-1.1"] == {"1.0"}
