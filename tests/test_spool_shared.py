"""Two daemons take from one spool (shared storage): a claim never replaces another file, a live
daemon's claimed files are left to it, and a dead one's are taken over. Real directories and a
real SQLite store; the second daemon's failing store is a closed one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pfhjem_msg.intake.spool import Spool, claimed_waiting, split_claimed
from pfhjem_msg.store.sqlite import SqliteStore


def _now() -> datetime:
    return datetime.now(UTC)


def _down(store: SqliteStore) -> SqliteStore:
    """Another connection to the same store that fails every write, as when its daemon's disk
    or database is gone."""
    broken = SqliteStore(store.path)
    broken.close()
    return broken


def _stored(store: SqliteStore) -> list[str]:
    return sorted(store.raw(i).decode() for i in range(1, sum(store.counts().values()) + 1))


def test_a_file_written_again_under_a_claimed_name_does_not_replace_the_claimed_one(
    tmp_path: Path, store: SqliteStore
) -> None:
    inbox = tmp_path / "inbox"
    stuck = Spool(inbox, _down(store), _now, 0.0, takeover_seconds=3600)
    other = Spool(inbox, store, _now, 0.0, takeover_seconds=3600)
    (inbox / "m.xml").write_bytes(b"<first/>")
    assert stuck.scan() == 0  # claimed, not stored
    (inbox / "m.xml").write_bytes(b"<second/>")  # the hub reuses the name
    assert other.scan() == 1
    assert _stored(store) == ["<second/>"]
    left = list((inbox / ".claimed").iterdir())
    assert [p.read_bytes() for p in left] == [b"<first/>"]
    assert split_claimed(left[0].name) == (stuck.claimer, "m.xml")


def test_a_live_daemons_claimed_files_are_left_to_it_and_taken_over_after_the_wait(
    tmp_path: Path, store: SqliteStore
) -> None:
    inbox = tmp_path / "inbox"
    stuck = Spool(inbox, _down(store), _now, 0.0)
    other = Spool(inbox, store, _now, 0.0, takeover_seconds=3600)
    (inbox / "a.xml").write_bytes(b"<a/>")
    stuck.scan()
    assert other.scan() == 0 and other.scan() == 0  # in another daemon's hands: not taken
    assert claimed_waiting(inbox).count == 1 and _stored(store) == []
    other.takeover = 0.0  # as if the wait had passed
    assert other.scan() == 1
    assert _stored(store) == ["<a/>"] and claimed_waiting(inbox).count == 0
    row = store.message(1)
    assert row is not None and row.source == "spool:a.xml"


def test_own_leftovers_are_retried_at_once_and_a_double_store_makes_one_message(
    tmp_path: Path, store: SqliteStore
) -> None:
    inbox = tmp_path / "inbox"
    spool = Spool(inbox, store, _now, 0.0, takeover_seconds=3600)
    entry = inbox / ".claimed" / f".{spool.claimer}.b.xml"
    entry.parent.mkdir(mode=0o700)
    entry.write_bytes(b"<b/>")  # as a scan leaves it when the store failed
    (inbox / ".claimed" / "c.xml").write_bytes(b"<c/>")  # claimed under a bare name, before the scheme
    assert spool.scan() == 2
    # the same bytes claimed by a daemon that died after storing them, before removing them
    (inbox / ".claimed" / ".0123abcd.b.xml").write_bytes(b"<b/>")
    Spool(inbox, store, _now, 0.0, takeover_seconds=0).scan()
    assert _stored(store) == ["<b/>", "<c/>"] and claimed_waiting(inbox).count == 0


def test_a_refused_file_keeps_the_hubs_name_in_refused(tmp_path: Path, store: SqliteStore) -> None:
    inbox = tmp_path / "inbox"
    spool = Spool(inbox, store, _now, 0.0, max_bytes=10)
    (inbox / "big.xml").write_bytes(b"x" * 100)
    assert spool.scan() == 1
    assert [p.name for p in (inbox / ".refused").iterdir()] == ["big.xml"]
    assert [(r.name, r.reason) for r in store.refused_files()] == [("big.xml", "too_large")]
