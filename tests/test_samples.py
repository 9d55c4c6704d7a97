"""The product does with each of our samples what samples/README.md says it must."""

from __future__ import annotations

import pytest

from pfhjem_msg.kith import apprec
from pfhjem_msg.kith.batch import examine_file
from pfhjem_msg.kith.verdict import Options
from tests.conftest import SAMPLES, SampleRow, sample_files, sample_table

TABLE = sample_table()


def test_table_covers_every_sample_and_enough_of_them() -> None:
    assert {r.file for r in TABLE} == {p.name for p in sample_files()}
    assert len(TABLE) >= 30
    standards = {r.standard for r in TABLE}
    assert {"dialogmelding-1.0", "dialogmelding-1.1", "epikrise-1.2", "apprec-1.1"} <= standards
    assert sum(r.marked for r in TABLE) >= 10 and sum(not r.marked for r in TABLE) >= 10


@pytest.mark.parametrize("row", TABLE, ids=lambda r: r.file)
def test_validate_verdict(row: SampleRow, options: Options) -> None:
    verdict = examine_file(SAMPLES / row.file, options)
    codes = [i.code for i in verdict.issues]
    assert verdict.standard == row.standard
    assert verdict.valid is row.valid, codes
    for code in row.codes:
        assert code in codes


@pytest.mark.parametrize("row", TABLE, ids=lambda r: r.file)
def test_apprec_decision(row: SampleRow, options: Options) -> None:
    decision = apprec.decide(examine_file(SAMPLES / row.file, options))
    if row.apprec == "none":
        assert not decision.due, decision.reason
        return
    status, *codes = row.apprec.split()
    assert decision.due, decision.reason
    assert decision.status == status
    assert [c for c, _ in decision.errors] == codes
