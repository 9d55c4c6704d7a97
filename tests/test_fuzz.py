"""Anything at all on input ends in a verdict with issues, never a traceback: samples mutated
by hypothesis go through validation and the AppRec decision."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pfhjem_msg.kith import apprec
from pfhjem_msg.kith.verdict import Options, examine
from tests.conftest import sample_files

SEEDS = [p.read_bytes() for p in sample_files() if p.stat().st_size < 20_000]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "delete", "insert", "truncate", "duplicate", "tag"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        elif kind == "insert":
            data[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"<",
                        b">",
                        b"&",
                        b"<!DOCTYPE x>",
                        b"\x00",
                        b"\xff\xfe",
                        b"<x>",
                        b"</MsgInfo>",
                        b"]]>",
                        b"&amp;",
                        b'"',
                        b"\r",
                    ]
                )
            )
        elif kind == "truncate":
            del data[pos:]
        elif kind == "duplicate":
            end = min(len(data), pos + draw(st.integers(1, 400)))
            data[pos:pos] = data[pos:end]
        else:
            data[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"<Patient>",
                        b"<MsgId>x</MsgId>",
                        b"<Content/>",
                        b"<Status V='9'/>",
                        b"<Ident><Id/></Ident>",
                    ]
                )
            )
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_samples_never_crash(data: bytes) -> None:
    options = Options()
    verdict = examine(data, "fuzz", options)
    if not verdict.valid:
        assert verdict.issues, "an invalid verdict must say why"
    decision = apprec.decide(verdict)
    assert decision.reason
    if decision.due:
        assert decision.xml is not None and decision.status in ("1", "2")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    verdict = examine(data, "fuzz")
    assert verdict.valid is False or verdict.message is not None
