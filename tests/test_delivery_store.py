"""Deliveries in typed columns in a real store, on both backends: an existing store from before
them upgraded in place, a delivery unique per message by kind, follow-up and phase,
``due_deliveries`` agreeing with ``lifecycle.may_send`` over every state and kind, and the
daemon's own moves held to the lifecycle table."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import product
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from pfhjem_msg import lifecycle as lc
from pfhjem_msg.errors import StoreError
from pfhjem_msg.store import schema
from pfhjem_msg.store.base import Change, DeliverySpec, Transition
from pfhjem_msg.store.messages import SqlStore
from tests.store_backends import BACKENDS, PgServer

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=1)
ROUTED = [Transition("parsed", "p"), Transition("classified", "c"), Transition("routed", "r")]
TYPED = schema.MIGRATIONS.index(schema.typed_deliveries)


@dataclass
class Place:
    """One store of one backend, opened by the code under test, and a plain connection to the
    same database for setting rows up the way an older version or a test needs them."""

    kind: str
    open: Callable[[], SqlStore]
    connect: Callable[[], Any]

    def sql(self, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with closing(self.connect()) as conn:
            if self.kind == "postgresql":
                cur = conn.execute(statement.replace("?", "%s"), args)
                return [tuple(r) for r in cur.fetchall()] if cur.description else []
            cur = conn.execute(statement, args)
            return [tuple(r) for r in cur.fetchall()]


@pytest.fixture(params=BACKENDS)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "postgresql":
        from psycopg import connect

        from pfhjem_msg.store.postgres import PostgresStore

        server: PgServer = request.getfixturevalue("pg_server")
        url = server.fresh()
        return Place("postgresql", lambda: PostgresStore(url), lambda: connect(url, autocommit=True))
    from pfhjem_msg.store.sqlite import SqliteStore

    path = tmp_path / "store.sqlite3"
    return Place("sqlite", lambda: SqliteStore(path), lambda: sqlite3.connect(path, isolation_level=None))


@pytest.fixture
def store(place: Place) -> Iterator[SqlStore]:
    s = place.open()
    yield s
    s.close()


def _old_store(place: Place, monkeypatch: pytest.MonkeyPatch, deliveries: list[tuple[str, str]]) -> list[int]:
    """A store as the version before typed columns made it, with deliveries in its strings."""
    from pfhjem_msg.store import postgres, sqlite_file

    with monkeypatch.context() as m:
        for module in (schema, sqlite_file, postgres):
            m.setattr(module, "MIGRATIONS", schema.MIGRATIONS[:TYPED])
        old = place.open()
        ids = [old.accept(f"<m>{i}</m>".encode(), "spool:x", T0).message_id for i in range(2)]
        old.close()
    for n, (kind, dest) in enumerate(deliveries):
        place.sql(
            "INSERT INTO deliveries(message_id, kind, destination, filename, payload, next_attempt_at, created_at) "
            "VALUES (?,?,?,?,?,?,?)",
            (ids[n % 2], kind, dest, f"f{n}", b"x", T0.isoformat(), T0.isoformat()),
        )
    place.sql("UPDATE messages SET state = 'routed'")
    return ids


OLD = [
    ("apprec", "hub"),
    ("apprec", "edi2:apprec"),
    ("case_unit", "dir:/srv/cases/fjordvik"),
    ("default", "smtp:tildeling@fjordvik.example"),
    ("gp_copy", "edi2"),
    ("followup:3:open", "dir:/srv/cases/fjordvik"),
    ("followup:4:open", "hub"),  # the same message's second reminder: unique only with the follow-up
    ("followup:3:closing", "smtp:kreft@fjordvik.example"),
]


def test_a_store_from_before_typed_columns_reads_back_typed(
    place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _old_store(place, monkeypatch, OLD)
    store = place.open()  # the new code opens it: the migration runs
    try:
        rows = store.deliveries(first) + store.deliveries(second)
        got = sorted((d.kind, d.followup_id, d.phase, d.transport, d.target) for d in rows)
        assert got == sorted([
            ("apprec", None, None, "hub", None),
            ("apprec", None, None, "edi2_apprec", None),
            ("case_unit", None, None, "dir", "/srv/cases/fjordvik"),
            ("default", None, None, "smtp", "tildeling@fjordvik.example"),
            ("gp_copy", None, None, "edi2", None),
            ("reminder", 3, "open", "dir", "/srv/cases/fjordvik"),
            ("reminder", 4, "open", "hub", None),
            ("reminder", 3, "closing", "smtp", "kreft@fjordvik.example"),
        ])  # fmt: skip
        info = {d.slot: d.destination for m in (first, second) for d in store.delivery_info(m)}
        assert info[("reminder", 3, "open")] == "dir:/srv/cases/fjordvik"
        due = {(d.kind, d.transport) for d in store.due_deliveries(LATER, 100)}
        assert ("apprec", "edi2_apprec") not in due and ("apprec", "hub") in due, (
            "the intake posts that AppRec"
        )
        # the new key holds on the upgraded table: the same reminder again is not queued twice
        again = DeliverySpec("reminder", "hub", "r", b"x", followup_id=4, phase="open")
        place.sql("UPDATE messages SET state = 'received'")
        store.apply([Change(first, ROUTED, [again])], LATER)
        assert [d.filename for d in store.deliveries(first) if d.slot == again.slot] == ["f6"]
    finally:
        store.close()
    columns, indexes = _layout(place)
    assert "destination" not in columns and {"receipt_overdue_at", "service_id", "original"} <= columns
    assert {"deliveries_due", "deliveries_out", "deliveries_slot", "deliveries_awaiting_receipt"} <= indexes


def _layout(place: Place) -> tuple[set[str], set[str]]:
    """The deliveries table's columns and indexes."""
    if place.kind == "postgresql":
        columns = place.sql(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'deliveries'"
        )
        indexes = place.sql("SELECT indexname FROM pg_indexes WHERE tablename = 'deliveries'")
    else:
        columns = [(r[1],) for r in place.sql("PRAGMA table_info(deliveries)")]
        indexes = place.sql("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'deliveries'")
    return {r[0] for r in columns}, {r[0] for r in indexes}


def _version(place: Place) -> int:
    if place.kind == "postgresql":
        return int(place.sql("SELECT value FROM pfhjem_meta WHERE key = 'schema_version'")[0][0])
    return int(place.sql("PRAGMA user_version")[0][0])


def test_an_unknown_old_destination_stops_the_upgrade_and_changes_nothing(
    place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    _old_store(place, monkeypatch, [("apprec", "hub"), ("case_unit", "ftp:somewhere")])
    with pytest.raises(
        StoreError, match=r"delivery 2 of message 2 has a destination this version does not know"
    ):
        place.open()
    assert _version(place) == TYPED
    assert place.sql("SELECT destination FROM deliveries ORDER BY id") == [("hub",), ("ftp:somewhere",)]


def test_a_delivery_is_unique_per_message_by_kind_follow_up_and_phase(store: SqlStore) -> None:
    mid = store.accept(b"<m/>", "t", T0).message_id
    specs = [
        DeliverySpec("apprec", "hub", "a1", b"1"),
        DeliverySpec("apprec", "hub", "a2", b"2"),  # a second AppRec for one message: never
        DeliverySpec("reminder", "hub", "r1", b"x", followup_id=1, phase="open"),
        DeliverySpec("reminder", "hub", "r2", b"x", followup_id=1, phase="closing"),
        DeliverySpec("reminder", "hub", "r3", b"x", followup_id=2, phase="open"),
        DeliverySpec("reminder", "hub", "r4", b"x", followup_id=1, phase="open"),
    ]
    store.apply([Change(mid, ROUTED, specs)], T0)
    assert [(d.kind, d.followup_id, d.phase, d.filename) for d in store.deliveries(mid)] == [
        ("apprec", None, None, "a1"),
        ("reminder", 1, "open", "r1"),
        ("reminder", 1, "closing", "r2"),
        ("reminder", 2, "open", "r3"),
    ]


def test_due_deliveries_agree_with_may_send_for_every_state_and_kind(place: Place, store: SqlStore) -> None:
    made: dict[int, tuple[str, str]] = {}
    for n, (state, kind) in enumerate(product(lc.ALL_STATES, lc.DELIVERY_KINDS)):
        mid = store.accept(f"<m>{n}</m>".encode(), "t", T0).message_id
        spec = (
            DeliverySpec("reminder", "hub", f"r{n}", b"x", followup_id=n, phase="open")
            if kind == "reminder"
            else DeliverySpec(kind, "hub", f"d{n}", b"x")
        )
        store.apply([Change(mid, ROUTED, [spec])], T0)
        place.sql("UPDATE messages SET state = ? WHERE id = ?", (state, mid))
        made[mid] = (state, kind)
    due = {d.message_id for d in store.due_deliveries(LATER, 1000)}
    assert due == {mid for mid, (state, kind) in made.items() if lc.may_send(state, kind)}
    assert 0 < len(due) < len(made)


def test_an_illegal_move_the_daemon_drafted_is_not_written_and_the_message_is_held(
    store: SqlStore,
) -> None:
    mid = store.accept(b"<m/>", "t", T0).message_id
    bad = Change(mid, [Transition("parsed", "p"), Transition("delivered", "a bug")],
                 [DeliverySpec("apprec", "hub", "a", b"x")])  # fmt: skip
    with capture_logs() as logs:
        store.apply([bad], T0)
    row = store.message(mid)
    assert row is not None and row.state == "held"
    assert row.state_reason is not None and "from parsed to delivered" in row.state_reason
    assert store.deliveries(mid) == [], "nothing of the illegal change is written"
    assert [(e.from_state, e.to_state) for e in store.events(mid)] == [
        (None, "received"),
        ("received", "held"),
    ]
    (line,) = [x for x in logs if x["event"] == "store.illegal_transition"]
    assert line["log_level"] == "error" and line["message_id"] == mid
    assert (line["from_state"], line["to_state"]) == ("parsed", "delivered")


def test_a_legal_change_is_written_as_drafted(store: SqlStore) -> None:
    mid = store.accept(b"<m/>", "t", T0).message_id
    with capture_logs() as logs:
        store.apply([Change(mid, ROUTED, [DeliverySpec("apprec", "hub", "a", b"x")], "rejected")], T0)
        (d,) = store.due_deliveries(LATER, 10)
        assert store.delivered([d.id], LATER) == [(mid, "rejected")]  # routed → delivered → rejected
    assert not [x for x in logs if x["event"] == "store.illegal_transition"]


def test_a_delivery_failing_on_a_discarded_message_leaves_it_discarded(place: Place, store: SqlStore) -> None:
    mid = store.accept(b"<m/>", "t", T0).message_id
    store.apply([Change(mid, ROUTED, [DeliverySpec("case_unit", "hub", "c", b"x")])], T0)
    (d,) = store.deliveries(mid)
    place.sql("UPDATE messages SET state = 'discarded' WHERE id = ?", (mid,))
    with capture_logs() as logs:
        store.delivery_failed(d.id, "refused", LATER, None)
    row = store.message(mid)
    assert row is not None and row.state == "discarded"
    assert [x["to_state"] for x in logs if x["event"] == "store.illegal_transition"] == ["failed"]
    assert "from discarded to failed" in store.events(mid)[-1].reason


def test_every_text_column_of_a_migrated_postgresql_store_compares_byte_by_byte(place: Place) -> None:
    """Times are ISO-8601 text compared as text: on PostgreSQL every text column has the "C"
    collation, the typed delivery columns the migration adds as well, whatever the database's
    locale."""
    if place.kind != "postgresql":
        pytest.skip("SQLite compares text byte by byte anyway")
    place.open().close()
    loose = place.sql(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND data_type = 'text' AND collation_name IS DISTINCT FROM 'C' "
        "AND table_name != 'pfhjem_meta' ORDER BY 1, 2"  # its values are looked up, never ordered
    )
    assert loose == []
