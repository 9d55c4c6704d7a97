"""The lifecycle rules on their own, without a store: every backend executes what these
functions decide, so a wrong answer here is wrong in every backend."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from pfhjem_msg import lifecycle as lc
from pfhjem_msg.errors import OperatorRefused, PfhjemError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_every_state_is_in_exactly_one_group() -> None:
    groups = [lc.UNFINISHED, lc.WAITING, lc.TERMINAL]
    for state in lc.ALL_STATES:
        assert sum(state in g for g in groups) == 1, state
    assert lc.PROCESSING < lc.UNFINISHED
    assert lc.PRUNABLE < lc.TERMINAL and "failed" not in lc.PRUNABLE


def test_operator_verbs_cover_the_states_they_claim() -> None:
    assert lc.HOLDABLE == lc.UNFINISHED
    assert {"held"} == lc.RELEASABLE
    assert lc.UNFINISHED | {"held", "failed", "rejected"} == lc.DISCARDABLE
    assert not lc.REPLAYABLE & lc.FORCED_REPLAY
    assert set(lc.ALL_STATES) == lc.REPLAYABLE | lc.FORCED_REPLAY | lc.UNFINISHED


def test_table_names_only_known_states() -> None:
    for (_, source), targets in lc.TRANSITIONS.items():
        assert source in lc.ALL_STATES
        assert targets <= set(lc.ALL_STATES), source


def test_illegal_transition_is_refused_with_both_states_and_the_way_out() -> None:
    with pytest.raises(lc.IllegalTransition) as err:
        lc.check_transition("operator", 42, "done", "received")
    text = str(err.value)
    assert "message 42" in text and "from done to received" in text and "new message" in text
    assert isinstance(err.value, OperatorRefused) and isinstance(err.value, PfhjemError)


def test_daemon_may_not_skip_back_from_done() -> None:
    with pytest.raises(lc.IllegalTransition):
        lc.check_transition("daemon", 7, "done", "routed")
    lc.check_transition("daemon", 7, "done", "held")  # a GP's receipt asks for a person


@pytest.mark.parametrize("state", sorted(lc.HOLDABLE))
def test_hold_remembers_where_it_was(state: str) -> None:
    move = lc.operator_move(1, state, None, "held", remember_held_from=True)
    assert (move.target, move.held_from, move.due_now) == ("held", state, False)


def test_release_goes_back_where_it_was_held() -> None:
    move = lc.operator_move(1, "held", "classified", None)
    assert move.target == "classified" and move.due_now and not move.again


def test_release_of_a_message_the_daemon_held_starts_over_and_owes_no_apprec() -> None:
    move = lc.operator_move(1, "held", None, None)
    assert move.target == "received" and move.again and move.due_now


def test_discard_of_a_done_message_is_refused() -> None:
    with pytest.raises(lc.IllegalTransition):
        lc.operator_move(1, "done", None, "discarded", cancel_pending=True)
    assert lc.operator_move(1, "failed", None, "discarded", cancel_pending=True).cancel_pending


def _mode(state: str, *, failed: bool = False, from_start: bool = False, force: bool = False,
          pruned: bool = False) -> lc.ReplayMode:  # fmt: skip
    return lc.replay_mode(9, state, pruned=pruned, has_failed_deliveries=failed, from_start=from_start,
                          force_duplicate=force)  # fmt: skip


def test_replay_of_failed_deliveries_retries_only_those() -> None:
    assert _mode("failed", failed=True) == "deliveries"
    assert _mode("failed", failed=True, from_start=True) == "from_start"
    assert _mode("failed") == "from_start"


@pytest.mark.parametrize("state", sorted(lc.REPLAYABLE))
def test_replay_starts_over_from_every_replayable_state(state: str) -> None:
    assert _mode(state) == "from_start"
    lc.check_transition("operator", 9, state, "received")


@pytest.mark.parametrize("state", sorted(lc.FORCED_REPLAY))
def test_replay_of_a_handled_message_needs_force_and_makes_a_new_one(state: str) -> None:
    with pytest.raises(OperatorRefused, match="--force-duplicate"):
        _mode(state)
    assert _mode(state, force=True) == "new_message"


@pytest.mark.parametrize("state", sorted(lc.UNFINISHED))
def test_replay_of_a_message_in_progress_is_refused(state: str) -> None:
    with pytest.raises(OperatorRefused, match="still being processed"):
        _mode(state)


def test_replay_of_a_pruned_original_is_refused() -> None:
    with pytest.raises(OperatorRefused, match="retention"):
        _mode("failed", pruned=True)


def test_held_message_still_answers_the_hub_and_sends_reminders() -> None:
    assert lc.may_send("held", "apprec")
    assert lc.may_send("held", "reminder")
    assert not lc.may_send("held", "case_unit")
    assert not lc.may_send("discarded", "apprec")
    assert lc.may_send("routed", "case_unit")


def test_retention_prunes_only_final_untouched_unneeded_messages() -> None:
    old, before = NOW - timedelta(days=400), NOW - timedelta(days=365)
    assert lc.may_prune("done", old, before, needed_by_open_followup=False)
    assert not lc.may_prune("done", old, before, needed_by_open_followup=True)
    assert not lc.may_prune("done", NOW, before, needed_by_open_followup=False)
    for state in ("failed", "held", "routed"):
        assert not lc.may_prune(state, old, before, needed_by_open_followup=False), state


def test_same_episode_range_is_symmetric_around_the_anchor() -> None:
    low, high = lc.same_episode_range(date(2026, 3, 1), 90)
    assert (date(2026, 3, 1) - low).days == 90 == (high - date(2026, 3, 1)).days


def test_marked_message_closes_the_follow_up_whose_window_starts_nearest_today() -> None:
    today = date(2026, 3, 1)
    assert lc.nearest_followup([], today) is None
    candidates = [(1, date(2026, 1, 1)), (2, date(2026, 3, 10)), (3, date(2026, 2, 25))]
    assert lc.nearest_followup(candidates, today) == 3
    assert lc.nearest_followup([(5, date(2026, 3, 3)), (4, date(2026, 2, 27))], today) == 4  # tie: older id


def test_end_of_pathway_is_done_at_its_own_point_and_cancels_the_rest() -> None:
    assert lc.closing_status(False, 3, 3) == "done"
    assert lc.closing_status(False, 2, 3) == "cancelled"
    assert lc.closing_status(True, 3, 3) == "cancelled"
