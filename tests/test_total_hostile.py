"""Parsing is total: each hand-made attack gets a verdict, never a crash, and large
legitimate attachments are accepted.

Every attack is built by the test (see benchmarks/hostile_inputs.py), written under the
test's own temporary directory and examined in a subprocess with a 1.5 GB address-space cap
and a timeout, so a regression fails the test instead of the machine. Time and memory are
measured by the benchmark, not here.
"""

from __future__ import annotations

import pytest

from benchmarks.hostile_inputs import ATTACKS, run_attack

GUARD_ADDRESS_SPACE = 1536 * 1024 * 1024
GUARD_SECONDS = 90.0

# attack -> (valid, the codes of the verdict, the AppRec status or None when none can be sent)
EXPECTED: dict[str, tuple[bool, set[str], str | None]] = {
    "large_attachment_8mb_pdf": (True, set(), "1"),
    "attachment_near_max_bytes": (True, set(), "1"),
    "siblings_15_million": (False, {"XML_TOO_MANY_ELEMENTS"}, None),
    "comments_9_million": (False, {"XML_TOO_MANY_ELEMENTS"}, None),
    "attributes_5_million": (False, {"XML_TOO_MANY_ATTRIBUTES"}, None),
    "nested_100_thousand_deep": (False, {"XML_TOO_DEEP"}, None),
    "utf7_hidden_markup": (False, {"XML_ENCODING_UNSUPPORTED"}, None),
    "mime_charset_undefined": (True, {"MIME_CHARSET_UNKNOWN"}, "1"),
    "mime_nested_1000_deep": (False, {"MIME_TOO_DEEP"}, None),
    "mime_5_million_parts": (False, {"MIME_TOO_MANY_PARTS"}, None),
    "mime_10_million_headers": (False, {"MIME_HEADERS_TOO_LARGE"}, None),
    "mime_60_million_blank_lines": (False, {"ENVELOPE_NO_PAYLOAD"}, None),
    "schema_errors_90_thousand": (False, {"XSD_INVALID", "ISSUES_TRUNCATED"}, "1"),
}


def test_every_attack_has_an_expected_verdict() -> None:
    assert set(EXPECTED) == set(ATTACKS)


@pytest.mark.slow
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_hostile_input_gets_its_verdict(attack: str) -> None:
    result = run_attack(attack, address_space=GUARD_ADDRESS_SPACE, timeout=GUARD_SECONDS)
    assert "failed" not in result, result.get("failed")
    valid, codes, apprec_status = EXPECTED[attack]
    assert result["valid"] is valid
    assert set(result["codes"]) == codes  # type: ignore[arg-type]
    assert result["apprec"] == apprec_status


def test_90_thousand_schema_errors_are_capped_with_a_count_of_the_rest() -> None:
    from pfhjem_msg.kith.parse import Limits
    from pfhjem_msg.kith.verdict import Options, examine

    result = examine(ATTACKS["schema_errors_90_thousand"](), "many", Options(limits=Limits(max_issues=50)))
    codes = [i.code for i in result.issues]
    assert codes.count("XSD_INVALID") == 50
    truncated = [i for i in result.issues if i.code == "ISSUES_TRUNCATED"]
    assert len(truncated) == 1 and "89950 more" in truncated[0].message
