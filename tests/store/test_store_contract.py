"""The message store's contract (``Store``), which every backend must pass: the embedded
SQLite file and PostgreSQL, through the backend factory of ``tests/store_backends.py`` (no
access to a backend's private parts). The operator, follow-up and EDI 2.0 parts of the
contract are in the other ``test_store_contract_*.py`` files."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from pfhjem_msg.store.base import Change, DeliverySpec, Due, Facts, Receipt, Store, Transition
from tests.store_backends import StoreFactory

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def _route(
    store: Store, mid: int, kinds: tuple[str, ...] = ("apprec", "case_unit"), final: str = "done"
) -> None:
    specs = [DeliverySpec(k, "hub", f"{k}-{mid}.xml", b"<x/>", None, f"out-{k}-{mid}") for k in kinds]  # type: ignore[arg-type]
    store.transition(mid, [Transition("parsed", "p"), Transition("classified", "c"), Transition("routed", "r")],
                     T0, specs, on_delivered=final)  # type: ignore[arg-type]  # fmt: skip


def test_accept_is_durable_and_idempotent(store: Store, backend: StoreFactory) -> None:
    a = store.accept(b"<m>1</m>", "spool:a.xml", T0)
    again = store.accept(b"<m>1</m>", "smtp:127.0.0.1", T0)
    b = store.accept(b"<m>2</m>", "spool:b.xml", T0)
    assert a.new and not again.new and again.message_id == a.message_id and b.message_id != a.message_id
    assert store.raw(a.message_id) == b"<m>1</m>"
    row = store.message(a.message_id)
    assert row is not None and row.state == "received" and row.source == "spool:a.xml"
    assert [e.to_state for e in store.events(a.message_id)] == ["received"]
    store.close()
    reopened = backend()  # committed means stored; migrations re-run safely
    assert reopened.raw(b.message_id) == b"<m>2</m>"
    assert reopened.accept(b"<m>1</m>", "spool:again", T0) == again


def test_due_messages_and_attempts(store: Store) -> None:
    mid = store.accept(b"<m/>", "t", T0).message_id
    other = store.accept(b"<n/>", "t", T0).message_id
    assert store.due_messages(T0, 10) == [Due(mid, 0), Due(other, 0)]
    assert store.begin_attempts([mid, other], T0) == {mid: 1, other: 1}
    store.postpone(mid, T0 + timedelta(minutes=5), "transient", T0)
    assert store.due_messages(T0, 10) == [Due(other, 1)]
    assert store.due_messages(T0 + timedelta(minutes=5), 10) == [Due(mid, 1), Due(other, 1)]
    assert store.begin_attempts([mid], T0) == {mid: 2}


def test_accept_many_is_one_batch_and_idempotent(store: Store) -> None:
    first = store.accept_many([(b"<a/>", "spool:a"), (b"<b/>", "spool:b"), (b"<a/>", "spool:a2")], T0)
    assert [a.new for a in first] == [True, True, False]
    assert first[2].message_id == first[0].message_id
    assert [a.new for a in store.accept_many([(b"<b/>", "spool:b")], T0)] == [False]
    assert store.counts() == {"received": 2}


def test_transition_records_every_step_and_deliveries_once_per_kind(store: Store) -> None:
    mid = store.accept(b"<m/>", "t", T0).message_id
    _route(store, mid)
    _route(store, mid)  # a replayed routing adds no second AppRec
    assert [d.kind for d in store.deliveries(mid)] == ["apprec", "case_unit"]
    assert [e.to_state for e in store.events(mid)][:4] == ["received", "parsed", "classified", "routed"]
    assert store.message(mid).state == "routed"  # type: ignore[union-attr]
    assert store.due_messages(T0, 10) == []


def test_all_delivered_finishes_the_message(store: Store) -> None:
    mid = store.accept(b"<m/>", "t", T0).message_id
    _route(store, mid)
    first, second = store.due_deliveries(T0, 10)
    assert store.delivered([first.id], T0) == []
    assert store.delivered([second.id, second.id], T0) == [(mid, "done")]
    assert store.message(mid).state == "done"  # type: ignore[union-attr]
    assert store.delivered([second.id], T0) == []  # idempotent


def test_negative_apprec_ends_rejected(store: Store) -> None:
    mid = store.accept(b"<m/>", "t", T0).message_id
    _route(store, mid, ("apprec",), "rejected")
    (d,) = store.due_deliveries(T0, 10)
    assert store.delivered([d.id], T0) == [(mid, "rejected")]


def test_failed_delivery_retries_then_fails_the_message(store: Store) -> None:
    mid = store.accept(b"<m/>", "t", T0).message_id
    _route(store, mid, ("case_unit",))
    (d,) = store.due_deliveries(T0, 10)
    store.delivery_failed(d.id, "peer down", T0, T0 + timedelta(minutes=1))
    assert store.due_deliveries(T0, 10) == []
    (again,) = store.due_deliveries(T0 + timedelta(minutes=1), 10)
    assert again.attempts == 1 and again.last_error == "peer down"
    store.delivery_failed(d.id, "550 no such user", T0, None)
    assert store.message(mid).state == "failed"  # type: ignore[union-attr]
    assert "550" in store.events(mid)[-1].reason


def test_receipts_match_outgoing_and_can_hold(store: Store) -> None:
    mid = store.accept(b"<m/>", "t", T0).message_id
    _route(store, mid, ("gp_copy",))
    out = store.outgoing(f"out-gp_copy-{mid}")
    assert out is not None and out.message_id == mid
    store.delivered([out.id], T0)
    assert [d.id for d in store.overdue_receipts(T0 + timedelta(hours=97))] == [out.id]
    assert [d.id for d in store.flag_overdue_receipts(T0 - timedelta(hours=1), T0)] == []
    assert [d.id for d in store.flag_overdue_receipts(T0 + timedelta(hours=1), T0)] == [out.id]
    assert store.flag_overdue_receipts(T0 + timedelta(hours=1), T0) == []  # flagged once
    assert "no AppRec for the GP copy" in store.events(mid)[-1].reason
    store.record_receipt(out.id, "2", "E21", T0, "the GP copy was rejected")
    assert store.message(mid).state == "held"  # type: ignore[union-attr]
    assert store.overdue_receipts(T0 + timedelta(hours=97)) == []


def test_duplicates_and_held_apprec_still_goes(store: Store) -> None:
    a = store.accept(b"<m>a</m>", "t", T0).message_id
    store.apply([Change(a, [Transition("parsed", "p")], facts=Facts("X", "T", "1", "2", True))], T0)
    b = store.accept(b"<m>b</m>", "t", T0).message_id
    assert store.find_duplicate(b, "X", "1") == a and store.find_duplicate(b, "X", "9") is None
    c = store.accept(b"<m>c</m>", "t", T0).message_id
    store.transition(c, [Transition("held", "needs an operator")], T0,
                     [DeliverySpec("apprec", "hub", "a.xml", b"<a/>"), DeliverySpec("case_unit", "hub", "c.xml", b"<c/>")])  # fmt: skip
    assert [d.kind for d in store.due_deliveries(T0, 10)] == ["apprec"]


def test_apply_commits_several_messages_at_once(store: Store) -> None:
    a = store.accept(b"<m>a</m>", "t", T0).message_id
    b = store.accept(b"<m>b</m>", "t", T0).message_id
    _route(store, a, ("gp_copy",))
    (gp,) = store.due_deliveries(T0, 10)
    store.delivered([gp.id], T0)
    store.begin_attempts([b], T0)
    store.apply(
        [Change(b, [Transition("parsed", "p"), Transition("done", "AppRec")], facts=Facts("Y", "APPREC", "3", "4", False),
                receipt=Receipt(gp.id, "2", "E21", "the GP copy was rejected"))],
        T0,
    )  # fmt: skip
    row = store.message(b)
    assert row is not None and row.state == "done" and row.msg_id == "Y" and row.attempts == 0
    assert store.message(a).state == "held"  # type: ignore[union-attr]
    assert store.overdue_receipts(T0 + timedelta(hours=97)) == []


def test_concurrent_writers_do_not_corrupt(store: Store, backend: StoreFactory) -> None:
    other = backend()  # a second connection (or pool) to the same store
    errors: list[Exception] = []

    def writer(s: Store, tag: str) -> None:
        try:
            for i in range(100):
                s.accept(f"<m>{tag}{i}</m>".encode(), tag, T0)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(s, t)) for s, t in ((store, "a"), (other, "b"), (store, "a"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(store.counts().values()) == 200  # "a" twice at once: still one message per content


def test_the_last_deliveries_done_at_once_finish_the_message(backend: StoreFactory) -> None:
    stores = [backend(), backend()]
    mids = [stores[0].accept(f"<m>{i}</m>".encode(), "t", T0).message_id for i in range(40)]
    for mid in mids:
        _route(stores[0], mid)
    halves: list[list[int]] = [[], []]
    for mid in mids:
        first, second = stores[0].deliveries(mid)
        halves[0].append(first.id)
        halves[1].append(second.id)
    start = threading.Barrier(2)
    finished: list[tuple[int, str]] = []

    def deliver(n: int) -> None:
        start.wait()
        for delivery_id in halves[n]:
            finished.extend(stores[n].delivered([delivery_id], T0))

    threads = [threading.Thread(target=deliver, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(finished) == [(mid, "done") for mid in mids]  # each finished once, none left routed
    assert stores[0].counts() == {"done": 40}


def test_a_redraft_without_deliveries_commits_and_cancels_what_was_not_delivered(
    backend: StoreFactory,
) -> None:
    """A message replayed from the start whose new draft has no deliveries (the replayed AppRec
    dropped by "no second AppRec", an incoming AppRec, the attempts limit's bare "failed")
    must not fail the batch (``kind NOT IN ()`` is an error on PostgreSQL), and what was
    not delivered is cancelled, as on SQLite."""
    store = backend()
    rejected = [Transition("parsed", "p"), Transition("rejected", "r")]
    apprec = DeliverySpec("apprec", "hub", "apprec-1.xml", b"<apprec/>", None, "A1")
    later = T0 + timedelta(minutes=5)
    replayed = store.accept(b"<m>1</m>", "spool:x", T0).message_id
    other = store.accept(b"<m>2</m>", "spool:x", T0).message_id
    store.transition(replayed, rejected, T0, deliveries=[apprec])
    store.operator_transition(replayed, allowed=frozenset({"rejected"}), to_state="received", actor="op",
                              reason="replay from the start", now=T0, redraft=True)  # fmt: skip
    store.apply([Change(replayed, rejected), Change(other, [Transition("failed", "crashed 3 times")])], later)
    row, neighbour = store.message(replayed), store.message(other)
    assert row is not None and row.state == "rejected"
    assert neighbour is not None and neighbour.state == "failed"
    assert [d.status for d in store.deliveries(replayed)] == ["cancelled"]


def test_a_duplicate_without_sender_her_id_is_found_and_only_by_a_missing_one(store: Store) -> None:
    """The sender's HER-id compares null-safely (SQLite's ``IS``, PostgreSQL's ``IS NOT
    DISTINCT FROM``): a message without one is the duplicate of another without one."""
    a = store.accept(b"<m>a</m>", "t", T0).message_id
    store.apply([Change(a, [Transition("parsed", "p")], facts=Facts("X", "T", None, "2", True))], T0)
    b = store.accept(b"<m>b</m>", "t", T0).message_id
    assert store.find_duplicate(b, "X", None) == a and store.find_duplicate(b, "X", "1") is None
