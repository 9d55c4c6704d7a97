"""The store commands: ``store migrate`` (bring the configured store's schema up to date, and
say at which version it is; on the SQLite file only while no daemon runs on it, and only where
there is a store unless ``--create``) and ``store copy`` (move an installation's history from its SQLite
file into the PostgreSQL store the configuration names)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pfhjem_msg.cli_ops import config_option, settings_of
from pfhjem_msg.errors import StoreError
from pfhjem_msg.lock import StoreBusy, StoreLock, no_daemons
from pfhjem_msg.store import SQLITE_NAME, open_store
from pfhjem_msg.store.url import masked

if TYPE_CHECKING:
    from pfhjem_msg.config import Settings


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if settings.store_url is None:
        lock = _sqlite_alone(settings, args.create)
        try:
            before, now, where = _migrated(settings, args.create)
        finally:
            lock.release()
    else:
        with no_daemons(settings.store_url, masked(settings.store_url)):
            before, now, where = _migrated(settings, args.create)
    if before == now:
        print(f"{where}: schema version {now}, up to date; nothing to do")
    else:
        print(f"{where}: schema version {now} (was {before})")
    return 0


def _migrated(settings: Settings, create: bool) -> tuple[int, int, str]:
    store = open_store(settings, create=create, upgrade=True)
    try:
        before, now = store.schema_versions()
        return before, now, store.where
    finally:
        store.close()


def _sqlite_alone(settings: Settings, create: bool) -> StoreLock:
    """The SQLite store's lock, held while it migrates: a migration may drop what a running
    daemon of the version before writes, and a wrong state_dir must not become a new store."""
    path = settings.state_dir / SQLITE_NAME
    if not create and not os.path.lexists(path):
        raise StoreError(
            f"there is no store at {path}, so nothing was migrated: check state_dir in "
            f"{settings.path} (the daemon's store is pfhjem-msg.sqlite3 in it); to start a new, "
            "empty store there, run `pfhjem-msg store migrate --create --config FILE`"
        )
    try:
        return StoreLock.acquire(settings.state_dir)
    except StoreBusy as exc:
        raise StoreError(
            f"a daemon (pid {exc.pid}) runs on the store {path}, so it was not migrated: stop the "
            "daemon (systemctl stop pfhjem-msg), then run `pfhjem-msg store migrate` again, or "
            "start the new version's daemon, which migrates at its start"
        ) from None


def cmd_copy(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if settings.store_url is None:
        raise StoreError(
            "store copy moves the history into PostgreSQL, and the configuration names none: set "
            "[store] url, run `pfhjem-msg store migrate`, then copy"
        )
    from pfhjem_msg.store.copy import CopyRefused, copy_into
    from pfhjem_msg.store.postgres import PostgresBackend

    source = Path(args.source)
    if source.is_dir():
        source = source / SQLITE_NAME
    target = PostgresBackend(settings.store_url, create=True)
    try:
        report = copy_into(source, target)
    except CopyRefused as exc:
        _table(exc.report.tables)
        print(f"pfhjem-msg: {exc}", file=sys.stderr)
        return 1
    finally:
        target.close()
    _table(report.tables)
    print(f"stored originals: {'the same set in both' if report.originals_match else 'DIFFERENT'}")
    if report.copied:
        print(f"copied {report.copied} row(s) from {source} into {target.where}; verified")
    else:
        print(f"nothing to copy: {target.where} already holds everything in {source}; verified")
    return 0


def _table(rows: list[Any]) -> None:
    print(f"{'table':<16}{'sqlite':>10}{'postgresql':>12}{'copied':>10}")
    for t in rows:
        mark = "" if t.source == t.target else "   ≠"
        print(f"{t.table:<16}{t.source:>10}{t.target:>12}{t.copied:>10}{mark}")


def add_commands(sub: Any) -> None:
    s = sub.add_parser("store", help="the message store: migrate its schema, copy SQLite into PostgreSQL")
    ssub = s.add_subparsers(dest="store_command", required=True, metavar="SUBCOMMAND")
    m = ssub.add_parser("migrate", help="bring the configured store's schema up to date and show its version")
    config_option(m)
    m.add_argument("--create", action="store_true",
                   help="make a new, empty store where there is none (else that is refused: a wrong state_dir)")  # fmt: skip
    m.set_defaults(func=cmd_migrate)
    c = ssub.add_parser(
        "copy",
        help="copy an installation's history from its SQLite file into the configured PostgreSQL store",
    )
    config_option(c)
    c.add_argument("--from", dest="source", required=True, metavar="SQLITE_FILE",
                   help="the SQLite store (state_dir/pfhjem-msg.sqlite3, or the state_dir); read only")  # fmt: skip
    c.set_defaults(func=cmd_copy)
