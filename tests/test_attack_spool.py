"""Attacks by whoever may write into the spool (and, for one, beside it) that the first round
of fixes did not cover, and variants that held: a real spool directory, a real SQLite store."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pfhjem_msg.intake.spool import Spool
from pfhjem_msg.store.sqlite import SqliteStore
from tests.conftest import SAMPLES

SECRET = b"not for the store"


def _now() -> datetime:
    return datetime.now(UTC)


def _stored(store: SqliteStore) -> list[bytes]:
    return [bytes(r[0]) for r in store._db.execute("SELECT bytes FROM raw")]


def test_attack_spool_directory_swapped_for_a_link_to_the_state_directory(
    tmp_path: Path, store: SqliteStore
) -> None:
    """The hub may write beside its inbox too: it renames the inbox away and puts a link to
    another directory of the daemon's in its place. The daemon must not claim, store and
    delete what lies there (in the state directory: the store itself)."""
    hub = tmp_path / "hub"
    inbox = hub / "inbox"
    inbox.mkdir(parents=True)
    spool = Spool(inbox, store, _now, 0.0, 10_000)
    private = tmp_path / "private"
    private.mkdir()
    (private / "secret.xml").write_bytes(SECRET)
    inbox.rename(hub / "old")
    inbox.symlink_to(private)
    spool.scan()
    assert SECRET not in _stored(store)
    assert (private / "secret.xml").read_bytes() == SECRET, "nothing was moved or deleted there"
    assert not (private / ".claimed").exists()
    inbox.unlink()
    (hub / "old").rename(inbox)
    (inbox / "m.xml").write_bytes((SAMPLES / "dlg11-marked-tema.xml").read_bytes())
    assert spool.scan() == 1, "the real inbox back in place is read again"


def test_attack_spool_configured_through_a_link_still_works(tmp_path: Path, store: SqliteStore) -> None:
    real = tmp_path / "real-inbox"
    real.mkdir()
    link = tmp_path / "inbox"
    link.symlink_to(real)
    spool = Spool(link, store, _now, 0.0, 10_000)
    (real / "m.xml").write_bytes(b"<MsgHead/>")
    assert spool.scan() == 1 and _stored(store) == [b"<MsgHead/>"]


# -- variants that held -------------------------------------------------------------------------


def test_attack_directory_named_like_a_message_is_refused(tmp_path: Path, store: SqliteStore) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "x.xml").mkdir(parents=True)
    (inbox / "x.xml" / "inside.xml").write_bytes(SECRET)
    spool = Spool(inbox, store, _now, 0.0, 10_000)
    assert spool.scan() == 1
    assert _stored(store) == [] and spool.refused_count == 1
    assert (inbox / ".refused" / "x.xml" / "inside.xml").read_bytes() == SECRET, "moved aside, not emptied"


def test_attack_hard_link_to_a_file_of_the_daemon_is_stored_but_never_removed_at_its_source(
    tmp_path: Path, store: SqliteStore
) -> None:
    """The kernel's protected_hardlinks (on by default) lets a spool writer link only files it
    may read and write already, so a link discloses nothing new; the original name of the
    linked file must survive the daemon removing its own copy."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    mine = tmp_path / "mine.xml"
    mine.write_bytes(b"<MsgHead/>")
    os.link(mine, inbox / "linked.xml")
    Spool(inbox, store, _now, 0.0, 10_000).scan()
    assert mine.read_bytes() == b"<MsgHead/>"
    assert not (inbox / "linked.xml").exists()


def test_attack_claimed_directory_made_by_another_user_beforehand(tmp_path: Path, store: SqliteStore) -> None:
    """Whoever writes into the spool makes ``.claimed`` first, to read what the daemon claims."""
    if os.geteuid() != 0:
        pytest.skip("making a directory of another user needs root")
    inbox = tmp_path / "inbox"
    (inbox / ".claimed").mkdir(parents=True)
    os.chown(inbox / ".claimed", 65534, 65534)
    (inbox / "m.xml").write_bytes(b"<MsgHead/>")
    assert Spool(inbox, store, _now, 0.0, 10_000).scan() == 0
    assert (inbox / "m.xml").exists() and not list((inbox / ".claimed").iterdir())
