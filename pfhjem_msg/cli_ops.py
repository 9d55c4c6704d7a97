"""The operator commands: ``messages list|show|replay|hold|release|discard``, ``audit``,
``status``, ``prune``. Parse, call ``ops``, print. Nothing printed carries patient data
unless ``--show-patient`` is given, and that is written to the audit trail.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pfhjem_msg import ops
from pfhjem_msg.config import Settings, find_config, load
from pfhjem_msg.errors import OperatorRefused
from pfhjem_msg.followups import OSLO
from pfhjem_msg.kith.codes import MESSAGE_TYPE_PREFIXES, MESSAGE_TYPES, is_known_message_type
from pfhjem_msg.lifecycle import ALL_STATES
from pfhjem_msg.store import OperatorStore, open_store
from pfhjem_msg.store.base import MessageFilter, MessageRow

_RELATIVE = re.compile(r"^(\d+)\s*(m|min|h|d|w)$")
_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
STATES: tuple[str, ...] = ALL_STATES


def now() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str) -> datetime:
    """ISO date or date-time, or an age: 30m, 6h, 2d, 1w. Without an offset the time is
    Norwegian local time (Europe/Oslo, summer time included), as the follow-up windows are:
    an operator types the clock on the wall, not UTC."""
    text = value.strip()
    m = _RELATIVE.match(text)
    if m:
        return now() - timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a time: give 2026-11-22, 2026-11-22T08:00, or an age such as 6h or 2d"
        ) from None
    # in UTC, as the store keeps (and compares) its times
    return (moment if moment.tzinfo else moment.replace(tzinfo=OSLO)).astimezone(UTC)


def count(value: str) -> int:
    """A ``--limit``: a whole number, 0 or more (SQLite took -1 as "no limit", PostgreSQL
    refuses it: one meaning on both, said at the command line)."""
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a count: give a whole number, 0 or more")
    return n


def settings_of(args: argparse.Namespace) -> Settings:
    return load(find_config(args.config))


def _store(args: argparse.Namespace) -> OperatorStore:
    return open_store(settings_of(args), create=False, busy_timeout_ms=5000)


def with_store(
    work: Callable[[argparse.Namespace, OperatorStore], int],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        store = _store(args)
        try:
            return work(args, store)
        finally:
            store.close()

    return run


def refuse_unknown(option: str, given: str, valid: Iterable[str], more: str = "") -> OperatorRefused:
    """A typo in a filter would list nothing and look like good news: say so, and name what
    exists (and the nearest name, if one is close)."""
    names = list(valid)
    near = difflib.get_close_matches(given, names, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    return OperatorRefused(f"{option} {given!r} is unknown{hint}; valid: {', '.join(names)}{more}")


def _states(given: list[str] | None) -> tuple[str, ...]:
    states = tuple(s.strip().lower() for s in given or ())
    for s in states:
        if s not in STATES:
            raise refuse_unknown("--state", s, STATES)
    return states


def _msg_type(given: str | None, store: OperatorStore) -> str | None:
    """A known 8279 type, or one a stored message has (the list grows; senders are ahead)."""
    if given is None:
        return None
    value = given.strip().upper()
    if not is_known_message_type(value) and not store.list_messages(MessageFilter(msg_type=value, limit=1)):
        more = ", " + ", ".join(p + "…" for p in MESSAGE_TYPE_PREFIXES)
        raise refuse_unknown("--type", given, MESSAGE_TYPES, more)
    return value


def _filter(args: argparse.Namespace, limit: int | None, store: OperatorStore) -> MessageFilter:
    if args.since and args.until and args.since >= args.until:
        raise OperatorRefused("--since must be earlier than --until: no message can match both")
    return MessageFilter(
        states=_states(args.state),
        since=args.since,
        until=args.until,
        sender=args.sender,
        receiver=args.receiver,
        msg_type=_msg_type(args.type, store),
        marked=args.marked,
        limit=limit,
    )


def _dump(data: Any) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
    print()


# -- messages list / show ----------------------------------------------------------------------


def _row_dict(r: MessageRow) -> dict[str, Any]:
    return {
        "id": r.id,
        "received_at": r.received_at.isoformat(),
        "state": r.state,
        "msg_type": r.msg_type,
        "msg_id": r.msg_id,
        "sender_her": r.sender_her,
        "receiver_her": r.receiver_her,
        "marked": r.marked,
        "reason": r.state_reason,
    }


def cmd_list(args: argparse.Namespace, store: OperatorStore) -> int:
    rows = store.list_messages(_filter(args, args.limit, store))
    patients = {}
    if args.show_patient:
        patients = {r.id: ops.patient_of(store, r) for r in rows}
        store.audit(ops.operator(), "show patient", None, f"messages list --show-patient: {len(rows)} message(s)",
                    now())  # fmt: skip
    if args.json:
        _dump([_row_dict(r) | ({"patient": patients[r.id]} if args.show_patient else {}) for r in rows])
        return 0
    header = f"{'ID':>8}  {'RECEIVED (Oslo)':<16}  {'STATE':<10}  {'TYPE':<20}  {'SENDER':<9}  {'RECEIVER':<9}  M  REASON"
    print(header)
    for r in rows:
        marked = "-" if r.marked is None else ("y" if r.marked else "n")
        reason = (r.state_reason or "").replace("\n", " ")
        line = (
            f"{r.id:>8}  {r.received_at.astimezone(OSLO):%Y-%m-%d %H:%M}  {r.state:<10}  {(r.msg_type or '-')[:20]:<20}  "
            f"{ops.shown_id(r.sender_her) or '-':<9}  {ops.shown_id(r.receiver_her) or '-':<9}  {marked}  {reason[:70]}"
        )
        print(line)
        if args.show_patient:
            p = patients[r.id]
            print(f"{'':>8}  patient: {p.get('name') or '-'}, {p.get('national_id') or '-'}")
    if args.limit and len(rows) == args.limit:
        print(f"(first {args.limit}; use --limit N for more)")
    return 0


def cmd_show(args: argparse.Namespace, store: OperatorStore) -> int:
    message_id = ops.find(store, args.id)
    if args.raw:
        sys.stdout.buffer.write(store.raw(message_id))
        store.audit(ops.operator(), "show raw", message_id, "messages show --raw", now())
        return 0
    view = ops.show(store, message_id, args.show_patient, now())
    data = view.as_dict()
    if args.json:
        _dump(data)
        return 0
    r = view.row
    print(f"message {r.id}: {r.state}" + (f" ({r.state_reason})" if r.state_reason else ""))
    print(f"  received   {r.received_at.isoformat()} from {r.source}")
    print(f"  MsgId      {ops.shown_id(r.msg_id) or '-'}  type {r.msg_type or '-'}  marked {data['marked']}")
    print(f"  sender     {ops.shown_id(r.sender_her) or '-'}  receiver {ops.shown_id(r.receiver_her) or '-'}")
    if view.patient is not None:
        print(f"  patient    {view.patient.get('name') or '-'}, {view.patient.get('national_id') or '-'}")
    print(f"  AppRec     {'sent, status ' + view.apprec_sent if view.apprec_sent else 'none sent'}")
    if view.replay_of or view.replays:
        parts = ([f"replays message {view.replay_of}"] if view.replay_of else []) + (
            [f"replayed as {', '.join(map(str, view.replays))}"] if view.replays else []
        )
        print(f"  lineage    {'; '.join(parts)}")
    for link in view.edi2:
        state = "held" if link.held else "read" if link.read_at else "unread"
        apprec = {"none": "no AppRec posted", "intent": "AppRec being posted", "posted": "AppRec posted"}[
            link.apprec
        ]
        print(f"  EDI 2.0    service message {link.service_id} to HER {link.receiver_her}: {apprec}"
              + (f" ({link.apprec_service_id})" if link.apprec_service_id else "") + f", {state}")  # fmt: skip
    if r.pruned:
        print("  original   deleted by retention")
    print("history:")
    for e in view.events:
        move = f"{e.from_state or '·'} → {e.to_state}" if e.to_state else "note"
        print(f"  {e.at.isoformat(timespec='seconds')}  {e.actor:<14} {move:<24} {e.reason}")
    print("deliveries:")
    for d in view.deliveries:
        print(
            f"  {d.kind:<9} {d.status:<9} attempts {d.attempts}  {d.destination}"
            + (f" HER {d.her_id}" if d.her_id else "")
            + (f" (follow-up {d.followup_id}, {d.phase})" if d.kind == "reminder" else "")
        )
        if d.out_msg_id:
            print(f"            MsgId {d.out_msg_id}")
        if d.service_id:
            print(f"            message service id {d.service_id}")
        if d.last_error:
            print(f"            last error: {d.last_error}")
        if d.status == "pending" and d.next_attempt_at:
            print(f"            next attempt {d.next_attempt_at.isoformat(timespec='seconds')}")
        if d.receipt_status:
            print(f"            AppRec received: status {d.receipt_status} {d.receipt_errors or ''}".rstrip())
        elif d.receipt_overdue_at:
            print("            no AppRec after 96 hours")
    return 0


# -- changes -----------------------------------------------------------------------------------


def cmd_hold(args: argparse.Namespace, store: OperatorStore) -> int:
    mid = ops.find(store, args.id)
    before = ops.hold(store, mid, args.reason, now())
    print(
        f"message {mid}: {before} → held ({args.reason}); `pfhjem-msg messages release {mid}` lets it go on"
    )
    return 0


def cmd_release(args: argparse.Namespace, store: OperatorStore) -> int:
    mid = ops.find(store, args.id)
    ops.release(store, mid, args.reason or "", now())
    row = store.message(mid)
    print(f"message {mid}: held → {row.state if row else '?'}; the running daemon takes it from there")
    return 0


def cmd_discard(args: argparse.Namespace, store: OperatorStore) -> int:
    mid = ops.find(store, args.id)
    row = store.message(mid)
    if not args.yes:
        if not sys.stdin.isatty():
            raise OperatorRefused("discard asks for confirmation: add --yes when not at a terminal")
        answer = input(f"Discard message {mid} ({row.state if row else '?'}, MsgId {ops.shown_id(row.msg_id) if row else '-'})? "
                       "Nothing more will be delivered for it. [y/N] ")  # fmt: skip
        if answer.strip().lower() not in ("y", "yes", "j", "ja"):
            print("not discarded")
            return 1
    before = ops.discard(store, mid, args.reason, now())
    print(f"message {mid}: {before} → discarded ({args.reason})")
    return 0


def cmd_replay(args: argparse.Namespace, store: OperatorStore) -> int:
    _states(args.state)
    if args.ids and (args.state or _filtered(args)):
        raise OperatorRefused("give message ids or --state with filters, not both")
    if args.ids:
        ids = [ops.find(store, i) for i in args.ids]
    elif args.state:
        ids = ops.select(store, _filter(args, args.limit, store))
    else:
        raise OperatorRefused("say what to replay: message ids, or --state failed|rejected|held with filters")
    plans = [ops.plan_replay(store, i, args.from_start, args.force_duplicate) for i in ids]
    done = []
    for plan in plans:
        if not args.dry_run:
            try:
                ops.replay(store, plan, args.reason or "", now())
            except OperatorRefused as exc:  # it changed meanwhile: say so, go on with the rest
                print(f"skipped: {exc}", file=sys.stderr)
                continue
        done.append(plan)
        if not args.json:
            prefix = "would " if args.dry_run else ""
            extra = f" → message {plan.new_message}" if plan.new_message else ""
            print(f"{prefix}replay {plan.describe()}{extra}")
    if args.json:
        _dump({"dry_run": args.dry_run, "replays": [p.as_dict() for p in done]})
    elif not args.dry_run and done:
        print(f"{len(done)} message(s) queued; the running daemon processes them "
              "(`pfhjem-msg messages show ID` to follow)")  # fmt: skip
    elif not done:
        print("nothing to replay")
    return 0


def _filtered(args: argparse.Namespace) -> bool:
    return any(
        getattr(args, k) is not None for k in ("since", "until", "sender", "receiver", "type", "marked")
    )


# -- audit, status, prune ----------------------------------------------------------------------


def cmd_audit(args: argparse.Namespace, store: OperatorStore) -> int:
    entries = store.audit_entries(args.since, args.limit)
    if args.json:
        _dump([{"at": e.at.isoformat(), "actor": e.actor, "action": e.action, "message_id": e.message_id,
                "detail": e.detail} for e in entries])  # fmt: skip
        return 0
    if not entries:
        since = f" since {args.since.astimezone(OSLO).isoformat(timespec='minutes')}" if args.since else ""
        print(f"no audit entries{since}: no operator has changed a message, shown patient data or pruned")
    for e in entries:
        target = f"message {e.message_id}" if e.message_id else "-"
        print(f"{e.at.isoformat(timespec='seconds')}  {e.actor:<16} {target:<14} {e.action}: {e.detail}")
    return 0


def cmd_status(args: argparse.Namespace, store: OperatorStore) -> int:
    if args.ack_refused:
        count = ops.acknowledge_refused(store, now())
        print(f"acknowledged {count} refused file(s)", file=sys.stderr)
    settings = settings_of(args)
    st = ops.status(store, now(), settings.kith.crl_dir, spool=settings.intake.spool,
                    lease_seconds=settings.lease_seconds)  # fmt: skip
    if args.json:
        _dump(st.as_dict())
        return 1 if st.problems else 0
    f = st.facts
    counts = ", ".join(f"{k} {v}" for k, v in sorted(f.counts.items())) or "no messages"
    print(f"messages:    {counts}")
    if f.oldest_unfinished:
        mid, at = f.oldest_unfinished
        print(f"unfinished:  oldest is message {mid}, {ops.age(st.now - at)} old")
    print(f"held:        {st.held} message(s) waiting for an operator"
          + (" (`pfhjem-msg messages list --state held`)" if st.held else ""))  # fmt: skip
    print(f"last intake: {f.last_intake.isoformat(timespec='seconds') if f.last_intake else 'never'}"
          + (f" ({ops.age(st.now - f.last_intake)} ago)" if f.last_intake else ""))  # fmt: skip
    waiting = f" (oldest {ops.age(st.now - f.oldest_waiting_since)})" if f.oldest_waiting_since else ""
    print(f"deliveries:  {f.deliveries_waiting} waiting{waiting}")
    print(f"GP copies without AppRec after 96 h: {f.receipts_overdue}")
    for municipality, c in sorted(st.followups.items()):
        print(f"follow-ups:  {municipality}: {c['due']} due, {c['overdue']} overdue, {c['open']} later")
    for r in st.refused[:10]:
        size = "" if r.size is None else f", {r.size} bytes"
        print(f"refused:     {r.at.isoformat(timespec='seconds')} {r.name} ({r.reason}{size})")
    if st.edi2 is not None:
        e = st.edi2
        state = (f"FAILING since {e.failing_since.isoformat(timespec='seconds')}"
                 + (" (credentials refused)" if e.auth_failing else "") if e.failing_since else "working")  # fmt: skip
        print(f"EDI 2.0:     intake {state}; {e.unsettled} to answer, {e.held} held")
    for h in f.claims:
        until = h.latest_until.isoformat(timespec="seconds") if h.latest_until else "-"
        expired = f", {h.expired} with the lease EXPIRED" if h.expired else ""
        print(f"claims:      {h.daemon}: {h.messages} message(s), {h.deliveries} delivery(ies), "
              f"lease until {until}{expired}")  # fmt: skip
    if f.claims:
        print(f"claims:      {f.claims_expired} claimed with the lease expired (waiting for a takeover)")
    if st.claimed and (st.claimed.count or st.claimed.error):
        print(f"spool:       {st.claimed.error or f'{st.claimed.count} file(s) in .claimed, not yet stored'}")
    for p in st.problems:
        print(f"NEEDS AN OPERATOR: {p}")
    if not st.problems:
        print("OK")
    return 1 if st.problems else 0


def cmd_prune(args: argparse.Namespace, store: OperatorStore) -> int:
    settings = settings_of(args)
    r = settings.retention
    if r.payload_days is None:
        raise OperatorRefused("no retention is configured: set [retention] payload_days (and metadata_days)")
    moment = now()
    result = store.prune(
        moment - timedelta(days=r.payload_days),
        moment - timedelta(days=r.metadata_days) if r.metadata_days else None,
        moment,
        dry_run=args.dry_run,
    )
    if not args.dry_run:
        store.audit(ops.operator(), "prune", None,
                    f"{result.payloads} original(s) deleted, {result.messages} message(s) removed", moment)  # fmt: skip
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} the originals of {result.payloads} finished message(s) older than {r.payload_days} days")
    if r.metadata_days:
        print(
            f"{verb} {result.messages} finished message(s) with their history, older than {r.metadata_days} days"
        )
    if not args.dry_run:
        print(f"store: {result.bytes_before / 1e6:.1f} MB → {result.bytes_after / 1e6:.1f} MB")
    return 0


# -- the parser --------------------------------------------------------------------------------


CONFIG_HELP = "configuration file (default $PFHJEM_MSG_CONFIG, then /etc/pfhjem-msg/config.toml)"
JSON_HELP = "JSON for scripts instead of the table"
TIME_ZONE_HELP = "Norwegian time unless an offset such as Z or +01:00 is given"


def config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help=CONFIG_HELP)


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", action="append", metavar="S",
                   help=f"in this state (repeat for several): {', '.join(STATES)}")  # fmt: skip
    p.add_argument("--since", type=parse_time, metavar="T",
                   help=f"received at or after T: 2026-11-22, 2026-11-22T08:00 ({TIME_ZONE_HELP}), or an age: 6h, 2d")  # fmt: skip
    p.add_argument(
        "--until", type=parse_time, metavar="T", help=f"received before T (like --since; {TIME_ZONE_HELP})"
    )
    p.add_argument("--sender", metavar="HER", help="sender HER-id")
    p.add_argument("--receiver", metavar="HER", help="receiver HER-id")
    p.add_argument("--type", metavar="T", help="message type (8279), e.g. DIALOG_HELSEFAGLIG or EPIKRISE")
    marked = p.add_mutually_exclusive_group()
    marked.add_argument(
        "--marked", dest="marked", action="store_const", const=True, help="marked Pakkeforløp hjem"
    )
    marked.add_argument("--unmarked", dest="marked", action="store_const", const=False, help="not marked")


def add_commands(sub: Any) -> None:
    m = sub.add_parser("messages", help="see and handle stored messages")
    msub = m.add_subparsers(dest="messages_command", required=True, metavar="SUBCOMMAND")

    ls = msub.add_parser("list", help="list messages, newest first")
    config_option(ls)
    _filters(ls)
    ls.add_argument("--limit", type=count, default=100, metavar="N", help="at most N (default 100)")
    ls.add_argument("--json", action="store_true", help=JSON_HELP)
    ls.add_argument("--show-patient", action="store_true", help="show name and national id (audited)")
    ls.set_defaults(func=with_store(cmd_list))

    sh = msub.add_parser("show", help="everything known about one message")
    config_option(sh)
    sh.add_argument("id", metavar="ID", help="our message id or the MsgId")
    sh.add_argument("--json", action="store_true", help=JSON_HELP)
    sh.add_argument("--raw", action="store_true", help="print the stored original bytes (audited)")
    sh.add_argument("--show-patient", action="store_true", help="show name and national id (audited)")
    sh.set_defaults(func=with_store(cmd_show))

    rp = msub.add_parser("replay", help="process messages again from their stored originals")
    config_option(rp)
    rp.add_argument("ids", nargs="*", metavar="ID", help="our message ids or MsgIds")
    _filters(rp)
    rp.add_argument(
        "--limit", type=count, default=None, metavar="N", help="at most N messages of a bulk replay"
    )
    rp.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    rp.add_argument(
        "--from-start", action="store_true", help="re-read and re-route, not only retry deliveries"
    )
    rp.add_argument("--force-duplicate", action="store_true",
                    help="replay a done or duplicate message: delivers it once more (never a second AppRec)")  # fmt: skip
    rp.add_argument("--reason", default="", help="why (for the history and the audit trail)")
    rp.add_argument("--json", action="store_true", help=JSON_HELP)
    rp.set_defaults(func=with_store(cmd_replay))

    for name, helptext, func, reason_required in (
        ("hold", "stop a message where it is until released", cmd_hold, True),
        ("release", "let a held message go on", cmd_release, False),
        ("discard", "give a message up: nothing more is delivered for it", cmd_discard, True),
    ):
        p = msub.add_parser(name, help=helptext)
        config_option(p)
        p.add_argument("id", metavar="ID", help="our message id or the MsgId")
        p.add_argument(
            "--reason", required=reason_required, default="", help="why (for the history and the audit)"
        )
        if name == "discard":
            p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        p.set_defaults(func=with_store(func))

    a = sub.add_parser("audit", help="what operators did: state changes, patient data shown, pruning")
    config_option(a)
    a.add_argument("--since", type=parse_time, metavar="T",
                   help=f"entries at or after T: 2026-11-22, 2026-11-22T08:00 ({TIME_ZONE_HELP}), or an age: 7d")  # fmt: skip
    a.add_argument("--limit", type=count, default=None, metavar="N", help="at most N entries, oldest first")
    a.add_argument("--json", action="store_true", help=JSON_HELP)
    a.set_defaults(func=with_store(cmd_audit))

    s = sub.add_parser(
        "status", help="counts, oldest unfinished, deliveries waiting; exit 1 if an operator is needed"
    )
    config_option(s)
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.add_argument(
        "--ack-refused",
        action="store_true",
        help="mark the refused spool files seen (audited), then show status",
    )
    s.set_defaults(func=with_store(cmd_status))

    pr = sub.add_parser(
        "prune", help="delete originals and old history as [retention] says, and free the disk"
    )
    config_option(pr)
    pr.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    pr.set_defaults(func=with_store(cmd_prune))
