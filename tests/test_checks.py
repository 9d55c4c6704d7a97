"""Pure rules: national id control digits, UUIDs, code lists."""

from __future__ import annotations

from pfhjem_msg.kith import checks, codes
from tools.make_samples import synthetic_fnr


def test_control_digits() -> None:
    good = synthetic_fnr(14, 3, 1958, 412)
    assert checks.national_id_checksum_ok(good)
    assert not checks.national_id_checksum_ok(good[:-1] + str((int(good[-1]) + 1) % 10))
    assert not checks.national_id_checksum_ok("1234567890")
    assert not checks.national_id_checksum_ok("abcdefghijk")


def test_uuid_forms() -> None:
    assert checks.UUID.match("615aba81-6a88-41d1-a9f5-90b28cfc8b73")
    assert checks.UUID.match("A76D8934-D4BA-4A22-8F5D-5DF5E3FC5756")
    assert not checks.UUID.match("FiktivTestdata0001")
    assert not checks.UUID.match("{615aba81-6a88-41d1-a9f5-90b28cfc8b73}")


def test_code_lists() -> None:
    assert codes.is_known_message_type("DIALOG_HELSEFAGLIG")
    assert codes.is_known_message_type("DIALOG_INNBYGGER_EKONTAKT")
    assert not codes.is_known_message_type("HENVISNING")
    assert set(codes.APPREC_STATUS) == {"1", "2", "3"}
    assert {"T01", "T02", "T10", "E10", "E21", "E36", "S01", "S02"} <= set(codes.APPREC_ERRORS)
