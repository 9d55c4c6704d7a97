"""Claims in ``status``: who holds which unfinished work, how much waits on an expired lease,
and an exit 1 once nobody has taken it over for twice the lease. Against every store backend."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pfhjem_msg import metrics, ops
from pfhjem_msg.cli_ops import cmd_status
from pfhjem_msg.store.base import Change, DeliverySpec, Transition
from pfhjem_msg.store.edi2 import DaemonStore
from tests.conftest import write_config

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
A, B = "host-a:100:aaaa", "host-b:200:bbbb"


def _work(store: DaemonStore, at: datetime) -> tuple[int, int, int]:
    """Two received messages, and one routed with two pending deliveries."""
    m1 = store.accept(b"<m1/>", "t", at).message_id
    m2 = store.accept(b"<m2/>", "t", at).message_id
    m3 = store.accept(b"<m3/>", "t", at).message_id
    steps = [Transition("parsed", "p"), Transition("classified", "c"), Transition("routed", "r")]
    specs = [
        DeliverySpec(k, "hub", f"{k}-{m3}.xml", b"<x/>", None, f"out-{k}-{m3}")
        for k in ("apprec", "case_unit")
    ]
    store.apply([Change(m3, steps, specs)], at)
    return m1, m2, m3


def test_status_facts_count_claims_per_daemon_and_expired_leases(store: DaemonStore) -> None:
    m1, m2, _ = _work(store, T0)
    assert store.status_facts(T0, T0).claims == ()
    assert [d.message_id for d in store.claim_messages(A, T0, T0 + LEASE, 2)] == [m1, m2]
    assert len(store.claim_deliveries(B, T0, T0 + LEASE * 10, 10)) == 2

    facts = store.status_facts(T0 + LEASE / 2, T0)
    by = {c.daemon: c for c in facts.claims}
    assert set(by) == {A, B}
    assert (by[A].messages, by[A].deliveries, by[A].latest_until, by[A].expired) == (2, 0, T0 + LEASE, 0)
    assert (by[B].messages, by[B].deliveries, by[B].latest_until, by[B].expired) == (0, 2, T0 + LEASE * 10, 0)
    assert facts.claims_expired == 0

    later = T0 + LEASE + timedelta(seconds=30)  # A's lease expired 30 s ago: a takeover is due
    facts = store.status_facts(later, T0)
    assert facts.claims_expired == 2 and {c.daemon: c.expired for c in facts.claims} == {A: 2, B: 0}
    assert {c.daemon: c.oldest_expired for c in facts.claims} == {A: T0 + LEASE, B: None}
    assert not any("lease" in p for p in ops.status(store, later, lease_seconds=60).problems)
    metrics.update_status(facts, later.timestamp())
    assert metrics.claims_expired._value.get() == 2

    stale = T0 + LEASE * 4  # expired three leases ago: no daemon runs to take it over
    problems = [p for p in ops.status(store, stale, lease_seconds=60).problems if "lease" in p]
    assert len(problems) == 1 and A in problems[0] and B not in problems[0]
    assert "2 message(s) or deliveries" in problems[0] and "start one" in problems[0]

    # B takes A's work over: nothing waits any more
    assert [d.message_id for d in store.claim_messages(B, stale, stale + LEASE, 10)] == [m1, m2]
    facts = store.status_facts(stale, T0)
    assert [(c.daemon, c.messages, c.deliveries) for c in facts.claims] == [(B, 2, 2)]
    assert facts.claims_expired == 0


def test_status_command_shows_claims_and_exits_1_for_a_dead_daemon(
    store: DaemonStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    ago = now - timedelta(minutes=10)
    _work(store, ago)
    store.claim_messages(A, ago, ago + LEASE, 1)  # A died ten minutes ago
    store.claim_deliveries(B, now, now + timedelta(hours=1), 10)
    config = write_config(tmp_path)

    def run(as_json: bool) -> tuple[int, str]:
        capsys.readouterr()
        code = cmd_status(argparse.Namespace(ack_refused=False, json=as_json, config=str(config)), store)
        return code, capsys.readouterr().out

    code, out = run(True)
    data = json.loads(out)
    assert code == 1 and data["claims_expired"] == 1
    assert [(c["daemon"], c["messages"], c["deliveries"], c["expired"]) for c in data["claims"]] == [
        (A, 1, 0, 1),
        (B, 0, 2, 0),
    ]
    assert data["claims"][0]["latest_lease_until"] == (ago + LEASE).isoformat()
    assert any(A in p and "start one" in p for p in data["problems"])
    assert "<m1/>" not in out

    code, out = run(False)
    assert code == 1
    assert f"claims:      {A}: 1 message(s), 0 delivery(ies)" in out and "1 with the lease EXPIRED" in out
    assert f"claims:      {B}: 0 message(s), 2 delivery(ies)" in out
    assert "claims:      1 claimed with the lease expired" in out
    assert f"NEEDS AN OPERATOR: 1 message(s) or deliveries claimed by {A}" in out
    assert "<m" not in out

    store.claim_messages(B, now, now + LEASE, 10)  # B takes A's over
    code, out = run(False)
    assert code == 0 and out.strip().endswith("OK") and A not in out
