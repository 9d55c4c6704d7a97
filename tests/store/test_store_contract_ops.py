"""The operator store's contract (``OperatorStore``), on both backends: listings and their
filters, hold/release/discard/replay as one checked transaction each, the audit trail, the
facts of ``status``, refused files, and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pfhjem_msg.errors import NoSuchMessage, OperatorRefused
from pfhjem_msg.lifecycle import DISCARDABLE, HOLDABLE, RELEASABLE
from pfhjem_msg.store.base import Change, DeliverySpec, Facts, MessageFilter, OperatorStore, Transition

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def _message(store: OperatorStore, body: bytes, facts: Facts, at: datetime = T0) -> int:
    mid = store.accept(body, "spool:x.xml", at).message_id
    store.apply([Change(mid, [Transition("parsed", "p")], facts=facts)], at)
    return mid


def _routed(store: OperatorStore, mid: int, kinds: tuple[str, ...] = ("apprec", "case_unit")) -> None:
    specs = [
        DeliverySpec(k, "hub", f"{k}-{mid}.xml", f"<{k}/>".encode(), "8300010", f"out-{k}-{mid}")
        for k in kinds
    ]
    store.transition(mid, [Transition("classified", "c"), Transition("routed", "r")], T0, specs)


def test_list_filters_each_condition(store: OperatorStore) -> None:
    a = _message(store, b"<a/>", Facts("A", "DIALOG_INNBYGGER_EKONTAKT", "111", "8300001", True))
    b = _message(store, b"<b/>", Facts("B", "SVAR", "222", "8300001", False), T0 + timedelta(hours=1))
    c = _message(store, b"<c/>", Facts("C", "SVAR", "111", "8400001", None), T0 + timedelta(hours=2))
    assert [r.id for r in store.list_messages(MessageFilter())] == [c, b, a]  # newest first
    assert [r.id for r in store.list_messages(MessageFilter(sender="111"))] == [c, a]
    assert [r.id for r in store.list_messages(MessageFilter(receiver="8300001", msg_type="SVAR"))] == [b]
    assert [r.id for r in store.list_messages(MessageFilter(marked=True))] == [a]
    assert [r.id for r in store.list_messages(MessageFilter(marked=False))] == [b]
    window = MessageFilter(since=T0 + timedelta(minutes=30), until=T0 + timedelta(hours=2))
    assert [r.id for r in store.list_messages(window)] == [b]
    assert [r.id for r in store.list_messages(MessageFilter(states=("parsed",), limit=2))] == [c, b]
    row = store.list_messages(MessageFilter(sender="222"))[0]
    assert (row.msg_id, row.msg_type, row.receiver_her, row.marked) == ("B", "SVAR", "8300001", False)


def test_resolve_by_id_or_msgid(store: OperatorStore) -> None:
    a = _message(store, b"<a/>", Facts("M-1", "SVAR", "1", "2", None))
    b = _message(store, b"<b/>", Facts("M-1", "SVAR", "3", "2", None))
    assert store.resolve(str(a)) == [a]
    assert store.resolve(" M-1 ") == [a, b]
    assert store.resolve("999") == [] and store.resolve("nothing") == []


def test_hold_release_discard_check_the_state_and_leave_a_trail(store: OperatorStore) -> None:
    mid = _message(store, b"<a/>", Facts("A", "SVAR", "1", "2", None))
    left = store.operator_transition(mid, allowed=HOLDABLE, to_state="held", actor="ola", reason="look first",
                                     now=T0, remember_held_from=True)  # fmt: skip
    assert left == "parsed" and store.message(mid).state == "held"  # type: ignore[union-attr]
    assert store.due_messages(T0, 10) == []
    with pytest.raises(OperatorRefused, match="is held now"):
        store.operator_transition(mid, allowed=HOLDABLE, to_state="held", actor="ola", reason="again", now=T0)
    store.operator_transition(mid, allowed=RELEASABLE, to_state=None, actor="kari", reason="fine", now=T0)
    assert store.message(mid).state == "parsed"  # type: ignore[union-attr]
    assert [d.message_id for d in store.due_messages(T0, 10)] == [mid]
    _routed(store, mid, ("apprec", "case_unit"))
    store.operator_transition(mid, allowed=DISCARDABLE, to_state="discarded", actor="kari", reason="test message",
                              now=T0, cancel_pending=True)  # fmt: skip
    assert {d.status for d in store.deliveries(mid)} == {"cancelled"}
    trail = [(e.actor, e.from_state, e.to_state) for e in store.events(mid)]
    assert ("ola", "parsed", "held") in trail and ("kari", "held", "parsed") in trail
    assert trail[-1] == ("kari", "routed", "discarded")
    audit = store.audit_entries(None)
    assert [(a.actor, a.action, a.message_id) for a in audit] == [
        ("ola", "parsed → held", mid), ("kari", "held → parsed", mid), ("kari", "routed → discarded", mid),
    ]  # fmt: skip
    with pytest.raises(NoSuchMessage):
        store.operator_transition(999, allowed=HOLDABLE, to_state="held", actor="ola", reason="x", now=T0)


def test_failed_deliveries_are_retried_and_finish_the_message(store: OperatorStore) -> None:
    mid = _message(store, b"<a/>", Facts("A", "SVAR", "1", "2", None))
    _routed(store, mid, ("case_unit",))
    (d,) = store.due_deliveries(T0, 10)
    store.delivery_failed(d.id, "disk full", T0, None)
    assert store.message(mid).state == "failed"  # type: ignore[union-attr]
    store.operator_transition(mid, allowed=frozenset({"failed"}), to_state="routed", actor="ola",
                              reason="disk cleaned", now=T0, retry_failed=True)  # fmt: skip
    (again,) = store.due_deliveries(T0, 10)
    assert again.id == d.id and again.attempts == 0
    assert store.delivered([again.id], T0) == [(mid, "done")]
    info = store.delivery_info(mid)
    assert [(i.kind, i.status, i.her_id, i.out_msg_id) for i in info] == [
        ("case_unit", "delivered", "8300010", f"out-case_unit-{mid}")
    ]
    assert info[0].delivered_at == T0


def test_replay_as_new_links_and_finds_the_apprec_sent(store: OperatorStore) -> None:
    mid = _message(store, b"<a/>", Facts("A", "SVAR", "1", "2", None))
    _routed(store, mid, ("apprec",))
    (apprec,) = store.due_deliveries(T0, 10)
    store.delivered([apprec.id], T0)
    new = store.replay_as_new(mid, "ola", "deliver again", T0)
    assert new != mid and store.lineage(new) == (mid, []) and store.lineage(mid) == (None, [new])
    copy = store.message(new)
    assert copy is not None and copy.replay_of == mid and copy.msg_id == "A" and copy.state == "received"
    assert store.raw(new) == store.raw(mid) == b"<a/>"
    sent = store.apprec_sent(new)
    assert sent is not None and sent.id == apprec.id
    assert store.due_messages(T0, 10)[0].again
    assert [a.action for a in store.audit_entries(T0)] == ["replay as new message"]
    with pytest.raises(NoSuchMessage):
        store.replay_as_new(999, "ola", "x", T0)


def test_apprec_sent_for_an_earlier_copy_from_the_same_sender(store: OperatorStore) -> None:
    first = _message(store, b"<a/>", Facts("DUP", "SVAR", "1", "2", None))
    _routed(store, first, ("apprec",))
    (apprec,) = store.due_deliveries(T0, 10)
    store.delivered([apprec.id], T0)
    again = _message(store, b"<a again/>", Facts("DUP", "SVAR", "1", "2", None))
    other = _message(store, b"<b/>", Facts("DUP", "SVAR", "9", "2", None))
    sent = store.apprec_sent(again)
    assert sent is not None and sent.id == apprec.id
    assert store.apprec_sent(other) is None


def test_audit_since_and_limit(store: OperatorStore) -> None:
    store.audit("ola", "show", 5, "shown with --raw", T0)
    store.audit("kari", "prune", None, "2 payloads", T0 + timedelta(days=1))
    assert [a.actor for a in store.audit_entries(None)] == ["ola", "kari"]
    assert [a.actor for a in store.audit_entries(T0 + timedelta(hours=1))] == ["kari"]
    assert [a.actor for a in store.audit_entries(None, 1)] == ["ola"]
    entry = store.audit_entries(None)[0]
    assert (entry.at, entry.message_id, entry.detail) == (T0, 5, "shown with --raw")


def test_status_facts(store: OperatorStore) -> None:
    assert store.status_facts(T0, T0).counts == {}
    a = _message(store, b"<a/>", Facts("A", "SVAR", "1", "2", None))
    store.accept(b"<b/>", "spool:b", T0 + timedelta(minutes=5))
    _routed(store, a, ("gp_copy", "case_unit"))
    gp = next(d for d in store.due_deliveries(T0, 10) if d.kind == "gp_copy")
    store.delivered([gp.id], T0)
    facts = store.status_facts(T0 + timedelta(days=5), T0 + timedelta(days=4))
    assert facts.counts == {"routed": 1, "received": 1}
    assert facts.oldest_unfinished == (a, T0)
    assert facts.last_intake == T0 + timedelta(minutes=5)
    assert facts.deliveries_waiting == 1 and facts.oldest_waiting_since == T0
    assert facts.receipts_overdue == 1


def test_refused_files_are_noted_once_until_acknowledged(store: OperatorStore) -> None:
    first = store.record_refused("spool", "big.xml", "too_large", 10_000_000, T0)
    assert store.record_refused("spool", "big.xml", "too_large", 10_000_000, T0) == first
    link = store.record_refused("spool", "link.xml", "symlink", None, T0)
    assert store.record_refused("spool", "link.xml", "symlink", None, T0) == link != first
    assert [(r.name, r.reason, r.size) for r in store.refused_files()] == [
        ("link.xml", "symlink", None), ("big.xml", "too_large", 10_000_000),
    ]  # fmt: skip
    assert store.acknowledge_refused("ola", T0) == 2
    assert store.refused_files() == [] and len(store.refused_files(acknowledged=True)) == 2
    assert store.acknowledge_refused("ola", T0) == 0
    assert store.record_refused("spool", "big.xml", "too_large", 10_000_000, T0) not in (first, link)


def test_prune_removes_payloads_then_history(store: OperatorStore) -> None:
    old = _message(store, b"<old/>", Facts("O", "SVAR", "1", "2", None))
    _routed(store, old, ("case_unit",))
    store.delivered([d.id for d in store.due_deliveries(T0, 10)], T0)
    recent = _message(store, b"<new/>", Facts("N", "SVAR", "1", "2", None), T0 + timedelta(days=60))
    later = T0 + timedelta(days=61)
    dry = store.prune(T0 + timedelta(days=30), None, later, dry_run=True)
    assert (dry.payloads, dry.messages) == (1, 0) and store.raw(old) == b"<old/>"
    result = store.prune(T0 + timedelta(days=30), None, later)
    assert (result.payloads, result.messages) == (1, 0) and result.bytes_before > 0
    assert store.message(old).pruned  # type: ignore[union-attr]
    assert store.deliveries(old)[0].payload == b""
    with pytest.raises(Exception, match="no stored original"):
        store.raw(old)
    assert store.raw(recent) == b"<new/>"
    gone = store.prune(T0 + timedelta(days=30), T0 + timedelta(days=30), later)
    assert gone.messages == 1 and store.message(old) is None and store.events(old) == []
    assert store.counts() == {"parsed": 1}
