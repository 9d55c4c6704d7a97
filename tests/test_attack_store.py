"""Attacks on the private store by whoever may write into the state directory's parent or,
through a loose state directory, into the directory itself. Real SQLite files; the files of
"another user" are made by chown, so those tests run only as root."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from pfhjem_msg.errors import StoreError
from pfhjem_msg.store.sqlite import SqliteStore

NOBODY = 65534


def _store_file(directory: Path) -> Path:
    path = directory / "pfhjem-msg.sqlite3"
    SqliteStore(path).close()
    return path


def test_attack_store_file_replaced_by_a_link_to_a_store_elsewhere(tmp_path: Path) -> None:
    """A complete, valid pfhjem-msg store, but somebody else's, linked in place of ours."""
    theirs = _store_file(tmp_path / "elsewhere")
    state = tmp_path / "state"
    ours = _store_file(state)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{ours}{suffix}").unlink(missing_ok=True)
    ours.symlink_to(theirs)
    with pytest.raises(StoreError):
        SqliteStore(ours).close()


def test_attack_wal_file_planted_by_another_user(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a file of another user needs root")
    state = tmp_path / "state"
    path = _store_file(state)
    planted = Path(f"{path}-wal")
    donor = tmp_path / "donor.sqlite3"
    db = sqlite3.connect(donor)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE x (y)")
    db.close()
    shutil.copyfile(donor, planted)  # any bytes will do: it is who owns them that matters
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(StoreError):
        SqliteStore(path).close()
