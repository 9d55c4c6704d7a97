"""``pfhjem-msg followups list|show|done|cancel|export``: the municipality's SP2 and SP3
follow-ups. Patient data only with ``--show-patient``, which is audited."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from pfhjem_msg import cli_ops, ops
from pfhjem_msg.cli_ops import JSON_HELP, config_option, refuse_unknown, settings_of, with_store
from pfhjem_msg.errors import OperatorRefused
from pfhjem_msg.followups import Followup, FollowupFilter, ics, local_date
from pfhjem_msg.store import OperatorStore


def _today() -> Any:
    return local_date(cli_ops.now())


def _dict(f: Followup, store: OperatorStore, show_patient: bool) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": f.id,
        "episode": f.episode_id,
        "municipality": f.municipality,
        "point": f.point,
        "window_start": f.window_start.isoformat(),
        "window_end": f.window_end.isoformat(),
        "anchor": f.anchor.isoformat(),
        "anchor_kind": f.anchor_kind,
        "status": f.status,
        "condition": f.condition(_today()),
        "message_id": f.source_message_id,
        "msg_id": f.source_msg_id,
        "received_at": f.received_at.isoformat(),
        "opened_reminder_at": f.opened_reminder_at.isoformat() if f.opened_reminder_at else None,
        "closing_reminder_at": f.closing_reminder_at.isoformat() if f.closing_reminder_at else None,
        "closed_at": f.closed_at.isoformat() if f.closed_at else None,
        "closed_by": f.closed_by,
        "note": f.note,
    }
    if show_patient:
        row = store.message(f.source_message_id)
        d["patient"] = ops.patient_of(store, row) if row else None
    return d


def municipality(args: argparse.Namespace, store: OperatorStore) -> str | None:
    """``--municipality`` as a configured (or stored) name: case-insensitive, and a prefix is
    enough («fjordvik» is «Fjordvik kommune»). A typo is refused with the names that exist,
    since an empty list would read as «nothing to do»."""
    given = args.municipality
    if given is None:
        return None
    known = sorted({m.name for m in settings_of(args).municipalities} | set(store.followup_counts(_today())))
    folded = given.strip().casefold()
    exact = [n for n in known if n.casefold() == folded]
    if exact:
        return exact[0]
    matches = [n for n in known if n.casefold().startswith(folded)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise OperatorRefused(
            f"--municipality {given!r} matches {', '.join(matches)}: give enough of the name to pick one"
        )
    raise refuse_unknown("--municipality", given, known or ["(no municipality is configured)"])


def _closing_message(f: Followup, store: OperatorStore) -> dict[str, Any] | None:
    """The message that closed the follow-up (an SP2/SP3 report, the end of the pathway, a death)."""
    actor = f.closed_by or ""
    if not actor.startswith("message ") or not actor[8:].isdigit():
        return None
    row = store.message(int(actor[8:]))
    if row is None:
        return {"message_id": int(actor[8:]), "msg_id": None, "received_at": ""}
    return {"message_id": row.id, "msg_id": row.msg_id, "received_at": row.received_at.isoformat()}


def _find(store: OperatorStore, ident: str) -> Followup:
    f = store.followup(int(ident)) if ident.isdigit() else None
    if f is None:
        raise OperatorRefused(f"there is no follow-up {ident!r}: list them with `pfhjem-msg followups list`")
    return f


def _audit_patient(store: OperatorStore, what: str, count: int) -> None:
    store.audit(
        ops.operator(), "show patient", None, f"{what} --show-patient: {count} follow-up(s)", cli_ops.now()
    )


def cmd_list(args: argparse.Namespace, store: OperatorStore) -> int:
    items = store.followups(
        FollowupFilter(municipality(args, store), args.due, args.overdue, include_closed=args.all), _today()
    )
    rows = [_dict(f, store, args.show_patient) for f in items]
    if args.show_patient:
        _audit_patient(store, "followups list", len(rows))
    if args.json:
        json.dump(rows, sys.stdout, ensure_ascii=False, indent=2)
        print()
        return 0
    print(f"{'ID':>6}  SP  {'WINDOW':<23}  {'CONDITION':<9}  {'MUNICIPALITY':<20}  {'MESSAGE':>7}  REMINDERS")
    for r in rows:
        reminders = (
            ",".join(k.split("_")[0] for k in ("opened_reminder_at", "closing_reminder_at") if r[k]) or "-"
        )
        print(f"{r['id']:>6}  {r['point']:>2}  {r['window_start']} – {r['window_end']}  {r['condition']:<9}  "
              f"{r['municipality'][:20]:<20}  {r['message_id']:>7}  {reminders}")  # fmt: skip
        if args.show_patient and r.get("patient"):
            print(
                f"{'':>6}  patient: {r['patient'].get('name') or '-'}, {r['patient'].get('national_id') or '-'}"
            )
    return 0


def cmd_show(args: argparse.Namespace, store: OperatorStore) -> int:
    f = _find(store, args.id)
    data = _dict(f, store, args.show_patient)
    data["closed_by_message"] = _closing_message(f, store)
    if args.show_patient:
        _audit_patient(store, f"followups show {f.id}", 1)
    reminders = [
        {"kind": d.kind, "phase": d.phase, "status": d.status, "destination": d.destination,
         "transport": d.transport, "target": d.target, "attempts": d.attempts,
         "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None, "last_error": d.last_error}
        for d in store.delivery_info(f.source_message_id)
        if d.kind == "reminder" and d.followup_id == f.id
    ]  # fmt: skip
    data["reminders"] = reminders
    if args.json:
        json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
        print()
        return 0
    print(f"follow-up {f.id}: samhandlingspunkt {f.point}, {data['condition']} ({f.municipality})")
    print(f"  window     {f.window_start} – {f.window_end}, from the {f.anchor_kind} date {f.anchor}")
    print(
        f"  message    {f.source_message_id} (MsgId {f.source_msg_id or '-'}, received {f.received_at.date()})"
    )
    if data.get("patient"):
        print(
            f"  patient    {data['patient'].get('name') or '-'}, {data['patient'].get('national_id') or '-'}"
        )
    for r in reminders:
        error = f" ({r['last_error']})" if r["last_error"] else ""
        print(f"  reminder   {r['phase']}: {r['status']} to {r['destination']}{error}")
    if f.closed_at:
        print(f"  closed     {f.closed_at.isoformat(timespec='seconds')} by {f.closed_by}: {f.note}")
    closer = data.get("closed_by_message")
    if closer:
        print(f"  closed by  message {closer['message_id']} (MsgId {closer['msg_id'] or '-'}, "
              f"received {closer['received_at'][:10]})")  # fmt: skip
    return 0


def cmd_close(args: argparse.Namespace, store: OperatorStore) -> int:
    f = _find(store, args.id)
    status = "done" if args.followups_command == "done" else "cancelled"
    text = (args.note if status == "done" else args.reason).strip()
    if not text:
        raise OperatorRefused(f"say why with {'--note' if status == 'done' else '--reason'}")
    ids = store.close_followup(
        f.id, status, ops.operator(), text, cli_ops.now(), getattr(args, "episode", False)
    )
    print(
        f"follow-up{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}: {status}; no further reminders"
    )
    return 0


def cmd_export(args: argparse.Namespace, store: OperatorStore) -> int:
    settings = settings_of(args)
    units = {
        m.name: f"{m.case_unit.name} (HER-id {m.case_unit.her_id or '-'})" for m in settings.municipalities
    }
    items = store.followups(FollowupFilter(municipality(args, store), include_closed=True), _today())
    data = ics(items, cli_ops.now(), units).encode("utf-8")
    if args.ics == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        _replace(Path(args.ics), data)
    still = sum(f.status == "open" for f in items)
    summary = sys.stderr if args.ics == "-" else sys.stdout  # stdout may be the calendar itself
    print(f"{args.ics}: {still} open follow-up window(s), {len(items) - still} closed (as cancelled events, "
          "so a re-import removes them from the calendar)", file=summary)  # fmt: skip
    return 0


def _replace(target: Path, data: bytes) -> None:
    """The whole new calendar or the old one, never half: a calendar server or a coordinator's
    subscription may read the file while it is being exported again."""
    temp = target.with_name(f".{target.name}.tmp")
    try:
        temp.write_bytes(data)
        temp.replace(target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise OperatorRefused(
            f"cannot write the calendar to {target}: {exc.strerror}; give --ics a file in a directory "
            "that exists and that you may write to, or - for standard output"
        ) from None


ID_HELP = "the follow-up's id (from `followups list`)"
MUNICIPALITY_HELP = "only this municipality: its configured name, or the start of it (case does not matter)"


def add_commands(sub: Any) -> None:
    fu = sub.add_parser("followups", help="the SP2 and SP3 follow-ups of the pathway")
    fsub = fu.add_subparsers(dest="followups_command", required=True, metavar="SUBCOMMAND")

    ls = fsub.add_parser("list", help="open follow-ups, by window")
    config_option(ls)
    ls.add_argument("--due", action="store_true", help="window open today (Norwegian date)")
    ls.add_argument("--overdue", action="store_true", help="window closed, follow-up still open")
    ls.add_argument("--municipality", metavar="M", help=MUNICIPALITY_HELP)
    ls.add_argument("--all", action="store_true", help="done and cancelled ones too")
    ls.add_argument("--json", action="store_true", help=JSON_HELP)
    ls.add_argument("--show-patient", action="store_true", help="name and national id (audited)")
    ls.set_defaults(func=with_store(cmd_list))

    sh = fsub.add_parser("show", help="one follow-up: window, message, reminders, closing")
    config_option(sh)
    sh.add_argument("id", metavar="ID", help=ID_HELP)
    sh.add_argument("--json", action="store_true", help=JSON_HELP)
    sh.add_argument("--show-patient", action="store_true", help="name and national id (audited)")
    sh.set_defaults(func=with_store(cmd_show))

    done = fsub.add_parser("done", help="the talk took place")
    config_option(done)
    done.add_argument("id", metavar="ID", help=ID_HELP)
    done.add_argument("--note", required=True, help="what was done (no patient data needed)")
    done.set_defaults(func=with_store(cmd_close))

    cancel = fsub.add_parser("cancel", help="no talk will take place (the patient died, moved, declined)")
    config_option(cancel)
    cancel.add_argument("id", metavar="ID", help=ID_HELP)
    cancel.add_argument("--reason", required=True, help="why no talk takes place (no patient data needed)")
    cancel.add_argument("--episode", action="store_true", help="cancel every open follow-up of its episode")
    cancel.set_defaults(func=with_store(cmd_close))

    ex = fsub.add_parser("export", help="an iCalendar file of the windows, for a coordinator's calendar")
    config_option(ex)
    ex.add_argument("--ics", required=True, metavar="FILE",
                    help="write the iCalendar (RFC 5545) file here, replaced whole; - for standard output")  # fmt: skip
    ex.add_argument("--municipality", metavar="M", help=MUNICIPALITY_HELP)
    ex.set_defaults(func=with_store(cmd_export))
