"""The store's side of the EDI 2.0 intake protocol (``Edi2IntakeStore`` and the daemon's extra
methods in ``Edi2Store``), on both backends: each step of the protocol is what the intake
needs to resume from after a crash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pfhjem_msg.edi2.answer import AppRecAnswer
from pfhjem_msg.edi2.intake import NO_APPREC, Edi2Health
from pfhjem_msg.lifecycle import Transport
from pfhjem_msg.store.base import Change, DeliverySpec, Transition
from pfhjem_msg.store.edi2 import DaemonStore
from tests.store_backends import StoreFactory

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
DOC = b"<?xml version='1.0' encoding='UTF-8'?>\n<MsgHead>one</MsgHead>\n"
APPREC_XML = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n<AppRec xmlns='http://www.kith.no/xmlstds/apprec/2012-02-15'>"
    b"<Status V='2'/><Error V='E10' OT='MsgId'/></AppRec>"
)
SID = "0b0e7a38-8a43-4c1e-9a77-1d9c1e7f0001"
SID2 = "0b0e7a38-8a43-4c1e-9a77-1d9c1e7f0002"


def routed(
    store: DaemonStore, message_id: int, transport: Transport, extra: tuple[DeliverySpec, ...] = ()
) -> None:
    apprec = DeliverySpec("apprec", transport, "apprec.xml", APPREC_XML, None, "apprec-id")
    store.apply([Change(message_id, [Transition("routed", "test")], [apprec, *extra], "rejected")], NOW)


def test_a_service_message_listed_again_is_not_stored_again(store: DaemonStore) -> None:
    first = store.edi2_accept(DOC, SID, 8300010, False, NOW)
    again = store.edi2_accept(DOC, SID, 8300010, False, NOW)
    assert first.new and not again.new and again.message_id == first.message_id
    (link,) = store.edi2_links(first.message_id)
    assert (link.service_id, link.receiver_her, link.is_apprec, link.apprec, link.read_at) == (
        SID, 8300010, False, "none", None,
    )  # fmt: skip
    row = store.message(first.message_id)
    assert row is not None and row.source == f"edi2:{SID}"


def test_the_same_bytes_twice_are_one_message_answered_once(store: DaemonStore) -> None:
    a = store.edi2_accept(DOC, SID, 8300010, False, NOW)
    b = store.edi2_accept(DOC, SID2, 8300010, False, NOW)
    assert a.message_id == b.message_id and not b.new
    first, second = store.edi2_record(SID), store.edi2_record(SID2)
    assert first is not None and second is not None and first.answers and not second.answers


def test_answer_is_undecided_then_the_queued_apprec(store: DaemonStore) -> None:
    mid = store.edi2_accept(DOC, SID, 8300010, False, NOW).message_id
    assert store.edi2_answer(mid) is None
    routed(store, mid, "edi2_apprec")
    assert store.edi2_answer(mid) == AppRecAnswer("2", (("E10", "MsgId"),))
    assert store.due_deliveries(NOW + timedelta(seconds=1), 10) == [], "deliver_due would send the AppRec too"


def test_answered_another_way_or_not_at_all_is_no_apprec(store: DaemonStore) -> None:
    mid = store.edi2_accept(DOC, SID, 8300010, False, NOW).message_id
    routed(store, mid, "hub")
    assert store.edi2_answer(mid) is NO_APPREC
    other = store.edi2_accept(DOC + b" ", SID2, 8300010, True, NOW).message_id
    store.apply([Change(other, [Transition("done", "an AppRec for something we sent")])], NOW)
    assert store.edi2_answer(other) is NO_APPREC


def test_posting_the_apprec_delivers_it_and_finishes_the_message(store: DaemonStore) -> None:
    mid = store.edi2_accept(DOC, SID, 8300010, False, NOW).message_id
    routed(store, mid, "edi2_apprec")
    store.edi2_apprec_intent(SID, NOW)
    rec = store.edi2_record(SID)
    assert rec is not None and rec.apprec == "intent"
    store.edi2_apprec_posted(SID, "11111111-2222-3333-4444-555555555555", NOW)
    rec = store.edi2_record(SID)
    assert rec is not None and rec.apprec == "posted" and not rec.read
    (apprec,) = store.delivery_info(mid)
    assert (apprec.status, apprec.service_id) == ("delivered", "11111111-2222-3333-4444-555555555555")
    row = store.message(mid)
    assert row is not None and row.state == "rejected"
    assert [r.service_id for r in store.edi2_unsettled(10)] == [SID]
    store.edi2_read(SID, NOW)
    assert store.edi2_unsettled(10) == []


def test_a_held_service_message_waits_for_an_operator_and_resumes_on_release(store: DaemonStore) -> None:
    mid = store.edi2_accept(DOC, SID, 8300010, False, NOW).message_id
    routed(store, mid, "edi2_apprec")
    store.edi2_hold(SID, "400: refused (requestId r-1)", NOW)
    row = store.message(mid)
    assert row is not None and row.state == "held" and "r-1" in (row.state_reason or "")
    assert store.edi2_unsettled(10) == []
    facts = store.edi2_facts()
    assert facts is not None and facts.held == 1
    store.operator_transition(mid, allowed=frozenset({"held"}), to_state=None, actor="ops", reason="fixed",
                              now=NOW)  # fmt: skip
    (again,) = store.edi2_unsettled(10)
    assert again.service_id == SID and again.held is None
    row = store.message(mid)
    assert row is not None and row.state == "routed"


def test_health_is_kept_for_status(store: DaemonStore) -> None:
    assert store.edi2_facts() is None
    store.edi2_save_health(
        Edi2Health(failing_since=NOW, last_error="refused", auth_failing=True, failures=3), NOW
    )
    facts = store.edi2_facts()
    assert facts is not None and (facts.failing_since, facts.auth_failing, facts.failures) == (NOW, True, 3)
    store.edi2_save_health(Edi2Health(last_success=NOW), NOW)
    facts = store.edi2_facts()
    assert facts is not None and facts.failing_since is None and facts.last_success == NOW


def test_receipts_are_awaited_for_what_went_through_the_service(store: DaemonStore) -> None:
    mid = store.edi2_accept(DOC, SID, 8300010, False, NOW).message_id
    copy = DeliverySpec("gp_copy", "edi2", "gp.xml", b"<x/>", "9100001", "gp-msgid")
    routed(store, mid, "edi2_apprec", (copy,))
    (d,) = store.due_deliveries(NOW + timedelta(seconds=1), 10)
    store.edi2_sent(d.id, SID2, NOW)
    store.delivered([d.id], NOW)
    assert [(r.id, s) for r, s in store.edi2_awaiting_receipts(NOW - timedelta(days=1), 10)] == [(d.id, SID2)]
    store.record_receipt(d.id, "1", "", NOW, None)
    assert store.edi2_awaiting_receipts(NOW - timedelta(days=1), 10) == []


def test_pruning_a_message_removes_its_links(store: DaemonStore) -> None:
    mid = store.edi2_accept(DOC, SID, 8300010, True, NOW).message_id
    store.apply([Change(mid, [Transition("done", "test")])], NOW)
    store.prune(NOW + timedelta(days=2), NOW + timedelta(days=2), NOW + timedelta(days=3))
    assert store.edi2_record(SID) is None and store.message(mid) is None


def test_two_daemons_taking_the_same_service_messages_store_each_once(backend: StoreFactory) -> None:
    import threading

    stores = [backend(), backend()]
    start = threading.Barrier(2)
    results: list[list[bool]] = [[], []]
    errors: list[Exception] = []

    def take(n: int) -> None:
        start.wait()
        try:
            for i in range(30):
                sid = f"0b0e7a38-8a43-4c1e-9a77-1d9c1e7f{i:04d}"
                results[n].append(stores[n].edi2_accept(DOC + str(i).encode(), sid, 8300010, False, NOW).new)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=take, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [a + b for a, b in zip(*results, strict=True)] == [1] * 30  # each new for exactly one of them
    assert sum(stores[0].counts().values()) == 30
    assert all(len(stores[0].edi2_links(m)) == 1 for m in range(1, 31))
