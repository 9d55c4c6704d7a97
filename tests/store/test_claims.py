"""Claims and leases: two daemons on one store never work on the same row at once, a dead one's
work is taken over after its lease, and a daemon whose lease lapsed and was taken over cannot
overwrite the other's work. Against every store backend."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pfhjem_msg.lifecycle import IllegalTransition
from pfhjem_msg.store.base import Change, DeliverySpec, Transition
from pfhjem_msg.store.edi2 import DaemonStore
from pfhjem_msg.store.sqlite import SqliteStore
from tests.store_backends import PgServer, StoreFactory

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
A, B = "host-a:100:aaaa", "host-b:200:bbbb"


def _routed(mid: int) -> Change:
    steps = [Transition("parsed", "p"), Transition("classified", "c"), Transition("routed", "r")]
    return Change(
        mid, steps, [DeliverySpec("apprec", "hub", f"apprec-{mid}.xml", b"<x/>", None, f"out-{mid}")]
    )


def test_a_claimed_message_is_not_claimed_by_another_daemon_until_its_lease_expires(
    store: DaemonStore,
) -> None:
    m1 = store.accept(b"<m1/>", "t", T0).message_id
    m2 = store.accept(b"<m2/>", "t", T0).message_id
    assert [d.message_id for d in store.claim_messages(A, T0, T0 + LEASE, 1)] == [m1]
    assert [d.message_id for d in store.claim_messages(B, T0, T0 + LEASE, 10)] == [m2]
    halfway = T0 + LEASE / 2
    assert [d.message_id for d in store.claim_messages(B, halfway, halfway + LEASE, 10)] == [
        m2
    ]  # A's stays A's
    assert [d.message_id for d in store.claim_messages(A, T0, T0 + LEASE, 10)] == [m1]  # its own, again
    later = T0 + LEASE + timedelta(seconds=1)
    assert [d.message_id for d in store.claim_messages(B, later, later + LEASE, 10)] == [m1, m2]  # A died


def test_renewed_claims_stay_and_released_claims_are_free_at_once(store: DaemonStore) -> None:
    mid = store.accept(b"<m/>", "t", T0).message_id
    store.claim_messages(A, T0, T0 + LEASE, 10)
    assert store.renew_claims(A, T0 + LEASE * 3) == 1
    assert store.claim_messages(B, T0 + LEASE * 2, T0 + LEASE * 3, 10) == []
    assert store.release_claims(A) == 1
    assert [d.message_id for d in store.claim_messages(B, T0, T0 + LEASE, 10)] == [mid]
    assert store.release_claims(None) == 1  # a daemon alone on its store frees whatever was held
    assert [d.message_id for d in store.claim_messages(A, T0, T0 + LEASE, 10)] == [mid]


def test_a_daemon_that_lost_its_claim_cannot_commit_over_the_one_that_took_over(store: DaemonStore) -> None:
    mid = store.accept(b"<m/>", "t", T0).message_id
    store.claim_messages(A, T0, T0 + LEASE, 10)
    later = T0 + LEASE * 2
    store.claim_messages(B, later, later + LEASE, 10)  # A stalled past its lease
    store.apply([_routed(mid)], later, owner=A)
    row = store.message(mid)
    assert row is not None and row.state == "received" and store.deliveries(mid) == []
    store.apply([_routed(mid)], later, owner=B)
    row = store.message(mid)
    assert row is not None and row.state == "routed" and [d.kind for d in store.deliveries(mid)] == ["apprec"]


def test_crashes_are_counted_across_daemons(store: DaemonStore) -> None:
    """A message that kills the daemon holding it is counted by the next one: after
    ``pipeline_attempts`` the pipeline fails it instead of killing every daemon in turn."""
    mid = store.accept(b"<m/>", "t", T0).message_id
    store.claim_messages(A, T0, T0 + LEASE, 10)
    assert store.begin_attempts([mid], T0) == {mid: 1}  # then A dies
    later = T0 + LEASE * 2
    (due,) = store.claim_messages(B, later, later + LEASE, 10)
    assert due.attempts == 1
    assert store.begin_attempts([mid], later) == {mid: 2}


def test_deliveries_are_claimed_once_and_marked_only_by_their_holder(store: DaemonStore) -> None:
    mid = store.accept(b"<m/>", "t", T0).message_id
    store.apply([_routed(mid)], T0)
    (d,) = store.claim_deliveries(A, T0, T0 + LEASE, 10)
    assert d.message_id == mid and d.payload == b"<x/>"
    assert store.claim_deliveries(B, T0, T0 + LEASE, 10) == []
    later = T0 + LEASE * 2
    (taken,) = store.claim_deliveries(B, later, later + LEASE, 10)  # A stalled
    assert store.held_deliveries(A, [d.id]) == [] and store.held_deliveries(B, [d.id]) == [
        d.id
    ]  # before sending
    assert store.delivered([d.id], later, owner=A) == []
    store.delivery_failed(d.id, "late", later, None, owner=A)
    assert [x.status for x in store.deliveries(mid)] == ["pending"]
    row = store.message(mid)
    assert row is not None and row.state == "routed"
    assert store.delivered([taken.id], later, owner=B) == [(mid, "done")]


def test_a_periodic_job_runs_on_one_daemon_at_a_time(backend: StoreFactory) -> None:
    a, b = backend(), backend()  # two daemons' handles on one store
    with a.exclusive("followups") as mine, b.exclusive("retention") as other_job:
        assert mine and other_job
        with b.exclusive("followups") as also:
            assert also == (backend.kind == "sqlite")  # the SQLite file has one daemon: always its own
    with b.exclusive("followups") as after:
        assert after  # released when the job ended


def test_two_daemons_claiming_at_once_take_different_rows(backend: StoreFactory) -> None:
    a, b = backend(), backend()
    ids = [a.accept(f"<m{i}/>".encode(), "t", T0).message_id for i in range(40)]
    got: dict[str, list[int]] = {A: [], B: []}

    def claim(store: DaemonStore, owner: str) -> None:
        for _ in range(10):
            got[owner] += [d.message_id for d in store.claim_messages(owner, T0, T0 + LEASE, 3)]
            store.apply([_routed(d) for d in got[owner][-3:]], T0, owner=owner)

    threads = [threading.Thread(target=claim, args=(a, A)), threading.Thread(target=claim, args=(b, B))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got[A] + got[B]) == ids, "a message was claimed by both daemons, or by neither"


def test_a_message_held_while_a_daemon_drafts_it_is_left_held_and_goes_on_after_release(
    backend: StoreFactory,
) -> None:
    from pfhjem_msg import ops

    daemon_a, daemon_b, operator = backend(), backend(), backend()
    mid = daemon_a.accept(b"<m/>", "t", T0).message_id
    daemon_a.claim_messages(A, T0, T0 + LEASE, 10)
    ops.hold(operator, mid, "asked to wait", T0)
    daemon_a.apply([_routed(mid)], T0, owner=A)  # the draft made before the hold is not committed
    row = daemon_a.message(mid)
    assert row is not None and row.state == "held" and daemon_a.deliveries(mid) == []
    assert daemon_b.claim_messages(B, T0, T0 + LEASE, 10) == []  # held: nobody's work
    ops.release(operator, mid, "", T0)
    later = T0 + LEASE * 2  # A has gone meanwhile
    assert [d.message_id for d in daemon_b.claim_messages(B, later, later + LEASE, 10)] == [mid]
    daemon_b.apply([_routed(mid)], later, owner=B)
    row = daemon_b.message(mid)
    assert row is not None and row.state == "routed"


def test_two_daemons_run_on_one_postgresql_store_and_share_the_periodic_jobs(
    tmp_path: Path, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No file lock on PostgreSQL; a periodic job another daemon is doing is skipped here."""
    from pfhjem_msg.config import load
    from pfhjem_msg.daemon import Daemon
    from pfhjem_msg.store.postgres import PostgresStore
    from tests.conftest import write_config

    url = pg_server.fresh()
    config = write_config(tmp_path, extra=f'[store]\nurl = "{url}"\n')
    first, second = Daemon(load(config)), Daemon(load(config))
    ran: list[str] = []
    monkeypatch.setattr(second, "_periodic", lambda name: lambda: ran.append(name))
    other = PostgresStore(url)
    try:
        assert first.id != second.id and first.lock is None and second.lock is None
        with other.exclusive("followups") as mine:
            assert mine
            second._due = {"followups", "retention"}
            second.run_due_jobs()
        assert ran == ["retention"]
        second._due = {"followups"}
        second.run_due_jobs()
        assert ran == ["retention", "followups"]
    finally:
        other.close()
        first.close()
        second.close()


def test_a_sqlite_daemon_resumes_a_dead_daemons_claimed_message_at_once(tmp_path: Path) -> None:
    """One daemon per SQLite file: what an earlier daemon held when it died is free at the next
    start, not after its lease."""
    from pfhjem_msg.config import load
    from pfhjem_msg.daemon import Daemon
    from tests.conftest import SAMPLES, write_config

    config = write_config(tmp_path)
    db = SqliteStore(tmp_path / "var" / "pfhjem-msg.sqlite3")
    now = datetime.now(UTC)
    mid = db.accept((SAMPLES / "dlg11-marked-tema.xml").read_bytes(), "spool:m.xml", now).message_id
    db.claim_messages("dead:1:dead", now, now + timedelta(days=1), 10)
    db.close()
    Daemon(load(config)).run_once()
    db = SqliteStore(tmp_path / "var" / "pfhjem-msg.sqlite3")
    row = db.message(mid)
    db.close()
    assert row is not None and row.state == "done"


def _wait_for_a_lock_wait(url: str) -> None:
    """Until some transaction on the database waits for a row lock (the daemon's, behind the
    operator's uncommitted move): the order the test needs, not a time it asserts."""
    import time

    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(3000):
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row is not None and row[0]:
                return
            time.sleep(0.01)
    raise AssertionError("the daemon's transaction never waited for the operator's")


def test_a_receipt_does_not_undo_an_operators_discard_on_postgresql(pg_server: PgServer) -> None:
    """On PostgreSQL (READ COMMITTED) a GP's negative receipt that reads the message's state
    while an operator discards it must not write ``held`` over the discard (discarded -> held
    is no daemon move): the state is read locked, and checked as the operator left it."""
    from pfhjem_msg.store.postgres import PostgresStore

    url = pg_server.fresh()
    daemon, operator = PostgresStore(url), PostgresStore(url)
    later = T0 + timedelta(minutes=5)
    try:
        mid = daemon.accept(b"<m>3</m>", "spool:x", T0).message_id
        copy = DeliverySpec("gp_copy", "hub", "gp.xml", b"<copy/>", "123", "G1")
        case = DeliverySpec("case_unit", "dir", "case.xml", b"<case/>", target="/srv/cases")
        daemon.transition(mid, [Transition("parsed", "p"), Transition("classified", "c"), Transition("routed", "r")],
                          T0, deliveries=[copy, case])  # fmt: skip
        gp = next(d.id for d in daemon.deliveries(mid) if d.kind == "gp_copy")
        daemon.delivered([gp], T0)
        receipt = threading.Thread(
            target=daemon.record_receipt, args=(gp, "2", "E10", later, "the GP's system rejected the copy")
        )
        audit = operator._audit

        def receipt_arrives_meanwhile(*args: object, **kwargs: object) -> None:
            receipt.start()  # the operator's move is written, not committed
            _wait_for_a_lock_wait(url)
            audit(*args, **kwargs)  # type: ignore[arg-type]

        operator._audit = receipt_arrives_meanwhile  # type: ignore[method-assign]
        operator.operator_transition(mid, allowed=frozenset({"routed"}), to_state="discarded", actor="op",
                                     reason="sent to us by mistake", now=later, cancel_pending=True)  # fmt: skip
        receipt.join()
        row = daemon.message(mid)
        assert row is not None and row.state == "discarded", "the operator's discard was undone"
    finally:
        daemon.close()
        operator.close()


def test_deliveries_are_claimed_durably_before_they_are_sent(backend: StoreFactory) -> None:
    """Processing commits non-durably; what ``claim_deliveries`` returns is sent next. Its
    durable commit flushes the log with the draft before it (one log, written in order), so a
    power loss after an AppRec went out cannot bring the message back to be drafted again
    with another AppRec Id: an AppRec goes out exactly once."""
    store = backend()
    mid = store.accept(b"<m/>", "t", T0).message_id
    store.apply([_routed(mid)], T0, owner=None)
    run = store._backend.run  # type: ignore[attr-defined]
    seen: list[tuple[str, bool]] = []

    def recording(work: object, durable: bool = True) -> object:
        result = run(work, durable)
        seen.append((getattr(work, "__qualname__", ""), durable))
        return result

    store._backend.run = recording  # type: ignore[attr-defined]
    claimed = store.claim_deliveries(A, T0, T0 + LEASE, 10)
    assert [d.kind for d in claimed] == ["apprec"]
    assert seen == [("SqlStore.claim_deliveries.<locals>.work", True)]


def test_delivered_and_an_operators_move_at_once_do_not_deadlock_on_postgresql(pg_server: PgServer) -> None:
    """The daemon marks a message's last delivery done while an operator discards the message
    (which locks the message, then its pending deliveries). Both lock the message first, so one
    waits for the other; deliveries first would deadlock, and PostgreSQL would abort one."""
    from pfhjem_msg.store.postgres import PostgresStore

    url = pg_server.fresh()
    daemon, operator = PostgresStore(url), PostgresStore(url)
    later = T0 + timedelta(minutes=5)
    errors: list[BaseException] = []
    try:
        mid = daemon.accept(b"<m>4</m>", "spool:x", T0).message_id
        apprec = DeliverySpec("apprec", "hub", "apprec.xml", b"<apprec/>", None, "A4")
        case = DeliverySpec("case_unit", "dir", "case.xml", b"<case/>", target="/srv/cases")
        daemon.transition(mid, [Transition("parsed", "p"), Transition("classified", "c"), Transition("routed", "r")],
                          T0, deliveries=[apprec, case])  # fmt: skip
        ids = [d.id for d in daemon.deliveries(mid)]

        def discard() -> None:
            try:
                operator.operator_transition(mid, allowed=frozenset({"routed", "done"}), to_state="discarded",
                                             actor="op", reason="sent to us by mistake", now=later,
                                             cancel_pending=True)  # fmt: skip
            except BaseException as exc:
                errors.append(exc)

        mover = threading.Thread(target=discard)
        finish = daemon._finish_if_delivered  # type: ignore[attr-defined]

        def operator_moves_meanwhile(*args: object, **kwargs: object) -> object:
            if not mover.is_alive() and mover.ident is None:
                mover.start()  # the daemon has marked the deliveries, not yet committed
                _wait_for_a_lock_wait(url)
            return finish(*args, **kwargs)

        daemon._finish_if_delivered = operator_moves_meanwhile  # type: ignore[attr-defined]
        finished = daemon.delivered(ids, later)
        mover.join()
        # The operator waited for the daemon, then found the message done: a refusal that says
        # so, not a store failure (a deadlock aborted by the server would be a StoreError).
        assert [type(e) for e in errors] == [IllegalTransition], [type(e).__name__ for e in errors]
        assert finished == [(mid, "done")]
        row = daemon.message(mid)
        assert row is not None and row.state == "done"
    finally:
        daemon.close()
        operator.close()
