"""The follow-up store's contract (``FollowupStore``), on both backends: a plan made in the
routed message's own transaction, the same episode not planned twice, follow-ups closed by a
later message, by the end of the pathway or by death, reminders queued once, and operators
closing follow-ups."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from pfhjem_msg.errors import OperatorRefused
from pfhjem_msg.followups import FollowupFacts, FollowupFilter, Phase
from pfhjem_msg.store.base import Change, DeliverySpec, OperatorStore, Transition

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
ANCHOR = date(2026, 11, 1)
WINDOWS = ((2, date(2026, 12, 1), date(2026, 12, 15)), (3, date(2027, 2, 1), date(2027, 2, 15)))
PATIENT = "p-0001"  # an opaque test id, not a national id


def _routed(store: OperatorStore, body: bytes, facts: FollowupFacts, at: datetime = T0) -> int:
    mid = store.accept(body, "spool:x.xml", at).message_id
    store.apply([Change(mid, [Transition("routed", "r")], followup=facts)], at)
    return mid


def _start(store: OperatorStore, body: bytes = b"<sp1/>", municipality: str = "Fjordvik",
           anchor: date = ANCHOR, patient: str | None = PATIENT) -> int:  # fmt: skip
    return _routed(store, body, FollowupFacts(municipality, patient, 1, anchor, "diagnosis", WINDOWS))


def _reminder(fid: int, phase: Phase) -> DeliverySpec:
    return DeliverySpec(
        "reminder",
        "hub",
        f"r-{fid}-{phase}.xml",
        b"<r/>",
        "8300010",
        f"r-{fid}-{phase}",
        followup_id=fid,
        phase=phase,
    )


def test_a_first_message_plans_its_follow_ups_once(store: OperatorStore) -> None:
    mid = _start(store)
    plan = store.followups_for_message(mid)
    assert [(f.point, f.window_start, f.window_end, f.status) for f in plan] == [
        (2, date(2026, 12, 1), date(2026, 12, 15), "open"), (3, date(2027, 2, 1), date(2027, 2, 15), "open"),
    ]  # fmt: skip
    f = plan[0]
    assert (f.municipality, f.anchor, f.anchor_kind, f.source_message_id) == (
        "Fjordvik",
        ANCHOR,
        "diagnosis",
        mid,
    )
    assert store.followup(f.id) == f and store.followup(9999) is None
    store.apply([Change(mid, [Transition("routed", "again")], followup=FollowupFacts(
        "Fjordvik", PATIENT, 1, ANCHOR, "diagnosis", WINDOWS))], T0)  # fmt: skip
    assert len(store.followups(FollowupFilter(), ANCHOR)) == 2  # a replay plans nothing new
    other = _start(store, b"<sp1 again/>", anchor=ANCHOR + timedelta(days=3))
    assert store.followups_for_message(other) == []  # the same episode: no second plan
    assert any("same episode" in e.reason for e in store.events(other))


def test_filters_and_counts(store: OperatorStore) -> None:
    _start(store)
    _start(store, b"<other/>", municipality="Åsli", patient="p-0002")
    today = date(2026, 12, 5)
    assert len(store.followups(FollowupFilter(), today)) == 4
    assert {f.municipality for f in store.followups(FollowupFilter(municipality="Åsli"), today)} == {"Åsli"}
    assert [f.point for f in store.followups(FollowupFilter(due=True), today)] == [2, 2]
    assert [f.point for f in store.followups(FollowupFilter(overdue=True), date(2026, 12, 20))] == [2, 2]
    assert store.followup_counts(today) == {
        "Fjordvik": {"open": 1, "due": 1, "overdue": 0}, "Åsli": {"open": 1, "due": 1, "overdue": 0},
    }  # fmt: skip
    assert [f.point for f in store.open_followups(until=today)] == [2, 2]
    assert store.open_followups(until=date(2026, 11, 30)) == []


def test_a_later_message_closes_the_nearest_follow_up(store: OperatorStore) -> None:
    mid = _start(store)
    sp2 = _routed(store, b"<sp2/>", FollowupFacts("Fjordvik", PATIENT, 2), T0 + timedelta(days=31))
    by_point = {f.point: f for f in store.followups_for_message(mid)}
    assert by_point[2].status == "done" and by_point[2].closed_by == f"message {sp2}"
    assert by_point[3].status == "open"
    assert store.followups(FollowupFilter(), ANCHOR) == [by_point[3]]
    assert len(store.followups(FollowupFilter(include_closed=True), ANCHOR)) == 2


def test_reminders_are_queued_once_and_cancelled_with_their_follow_up(store: OperatorStore) -> None:
    mid = _start(store)
    sp2 = store.followups_for_message(mid)[0]
    assert store.add_reminder(sp2.id, "open", _reminder(sp2.id, "open"), T0)
    assert not store.add_reminder(sp2.id, "open", _reminder(sp2.id, "open"), T0)
    assert store.followup(sp2.id).opened_reminder_at == T0  # type: ignore[union-attr]
    assert [d.slot for d in store.deliveries(mid)] == [("reminder", sp2.id, "open")]
    assert [d.slot for d in store.due_deliveries(T0, 10)] == [("reminder", sp2.id, "open")]
    assert store.close_followup(sp2.id, "cancelled", "ola", "moved away", T0) == [sp2.id]
    assert {d.status for d in store.deliveries(mid)} == {"cancelled"}
    assert not store.add_reminder(sp2.id, "closing", _reminder(sp2.id, "closing"), T0)
    assert [(a.actor, a.action) for a in store.audit_entries(None)] == [
        ("ola", f"follow-up {sp2.id} cancelled")
    ]
    with pytest.raises(OperatorRefused, match="already cancelled"):
        store.close_followup(sp2.id, "done", "ola", "x", T0)
    with pytest.raises(OperatorRefused, match="no follow-up 9999"):
        store.close_followup(9999, "done", "ola", "x", T0)


def test_closing_a_whole_episode(store: OperatorStore) -> None:
    mid = _start(store)
    first = store.followups_for_message(mid)[0]
    closed = store.close_followup(first.id, "done", "kari", "seen to", T0, whole_episode=True)
    assert len(closed) == 2 and {f.status for f in store.followups_for_message(mid)} == {"done"}


def test_the_end_of_the_pathway_and_death_close_the_plan(store: OperatorStore) -> None:
    mid = _start(store)
    _routed(store, b"<end/>", FollowupFacts("Fjordvik", PATIENT, 3, lifecycle="end"), T0 + timedelta(days=40))
    assert {f.point: f.status for f in store.followups_for_message(mid)} == {2: "cancelled", 3: "done"}
    assert store.followups(FollowupFilter(), ANCHOR) == []
    other = _start(store, b"<sp1 b/>", patient="p-0003")
    fid = store.followups_for_message(other)[0].id
    store.add_reminder(fid, "open", _reminder(fid, "open"), T0)
    death = _routed(store, b"<death/>", FollowupFacts("Fjordvik", "p-0003", 0, lifecycle="death"), T0)
    assert {f.status for f in store.followups_for_message(other)} == {"cancelled"}
    assert {d.status for d in store.deliveries(other)} == {"cancelled"}
    after = _start(store, b"<sp1 c/>", patient="p-0003", anchor=ANCHOR + timedelta(days=200))
    assert store.followups_for_message(after) == []
    assert any(f"message {death} said the patient has died" in e.reason for e in store.events(after))
