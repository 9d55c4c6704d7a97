"""One error for a message id that does not exist, whoever asks: the store, the operator's
verbs and the daemon's own store calls, against a real SQLite store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pfhjem_msg import ops
from pfhjem_msg.errors import NoSuchMessage, OperatorRefused, PfhjemError, StoreError
from pfhjem_msg.store.sqlite import SqliteStore

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MISSING = 424242


def _calls(store: SqliteStore) -> dict[str, Callable[[], object]]:
    return {
        "store.operator_transition": lambda: store.operator_transition(
            MISSING, allowed=frozenset({"held"}), to_state=None, actor="ops:test", reason="r", now=NOW
        ),
        "store.replay_as_new": lambda: store.replay_as_new(MISSING, "ops:test", "r", NOW),
        "ops.show": lambda: ops.show(store, MISSING, now=NOW),
        "ops.hold": lambda: ops.hold(store, MISSING, "check", NOW),
        "ops.release": lambda: ops.release(store, MISSING, "", NOW),
        "ops.discard": lambda: ops.discard(store, MISSING, "wrong", NOW),
        "ops.plan_replay": lambda: ops.plan_replay(store, MISSING, False, False),
    }


CALLS = ("store.operator_transition", "store.replay_as_new", "ops.show", "ops.hold", "ops.release", "ops.discard",
         "ops.plan_replay")  # fmt: skip


@pytest.mark.parametrize("call", CALLS)
def test_unknown_message_id_is_one_error_everywhere(tmp_path: Path, call: str) -> None:
    store = SqliteStore(tmp_path / "store.sqlite3")
    calls = _calls(store)
    assert set(calls) == set(CALLS)
    try:
        with pytest.raises(NoSuchMessage) as err:
            calls[call]()
    finally:
        store.close()
    assert err.value.message_id == MISSING
    assert f"message {MISSING} does not exist" in str(err.value) and "messages list" in str(err.value)
    assert isinstance(err.value, StoreError) and isinstance(err.value, OperatorRefused)
    assert isinstance(err.value, PfhjemError)
