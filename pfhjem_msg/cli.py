"""The ``pfhjem-msg`` command: parse arguments, call the library, print.

Exit codes: 0 ok, 1 the checked thing is bad, 2 usage or environment error. Nothing printed
here carries patient data: verdicts show codes, ids and HER-ids only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pfhjem_msg import __version__
from pfhjem_msg.config import ConfigProblems, Settings, effective, find_config, load
from pfhjem_msg.config_show import to_toml
from pfhjem_msg.decision import decide
from pfhjem_msg.errors import ConfigError, PfhjemError, StoreUnavailable
from pfhjem_msg.gpregistry import GPRegistry
from pfhjem_msg.kith import apprec
from pfhjem_msg.kith.batch import examine_file, validate_files
from pfhjem_msg.kith.parse import Limits
from pfhjem_msg.kith.schemas import load_schema_set
from pfhjem_msg.kith.verdict import Options
from pfhjem_msg.logs import configure as configure_logs

EX_TEMPFAIL = 75
"""The store's server cannot be reached now: try again (systemd restarts the daemon; exit 2,
a refusal, stops it: ``RestartPreventExitStatus=2``)."""


class UsageError(PfhjemError):
    """The command line asks for something that cannot be done (exit 2)."""


def _xml_files(paths: Sequence[str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.xml") if p.is_file())
        elif path.is_file():
            yield path
        else:
            raise UsageError(f"{raw}: no such file or directory")


def _settings(args: argparse.Namespace, required: bool = False) -> Settings | None:
    if getattr(args, "config", None) or required:
        return load(find_config(getattr(args, "config", None)))
    return None


def _options(args: argparse.Namespace, settings: Settings | None) -> Options:
    schemas_dir = Path(args.schemas) if getattr(args, "schemas", None) else None
    limits = Limits()
    trust = None
    if settings is not None:
        schemas_dir = schemas_dir or settings.kith.schemas
        limits = settings.kith.limits
        trust = settings.kith.trust_anchors
    if getattr(args, "max_bytes", None):
        limits = replace(limits, max_bytes=args.max_bytes)
    if getattr(args, "max_depth", None):
        limits = replace(limits, max_depth=args.max_depth)
    options = Options(schemas=load_schema_set(schemas_dir), limits=limits, trust_anchors=trust)
    if settings is not None:
        options.crl_dir, options.senders = settings.kith.crl_dir, settings.kith.senders
        options.require_signature = settings.kith.require_signature
    return options


def cmd_validate(args: argparse.Namespace) -> int:
    options = _options(args, _settings(args))
    files = list(_xml_files(args.paths))
    reports = validate_files(files, options, args.jobs)
    valid = bad = 0
    if args.jsonl:
        for r in reports:  # streamed: a big run is read (and piped on) while it goes
            sys.stdout.write(json.dumps(r.data, ensure_ascii=False) + "\n")
            sys.stdout.flush()
            bad += not r.valid
    elif args.json:
        collected = []
        for r in reports:
            collected.append(r.data)
            bad += not r.valid
        json.dump(collected, sys.stdout, ensure_ascii=False, indent=2)
        print()
    else:
        for r in reports:
            print("\n".join(r.lines))
            valid += r.valid
            bad += not r.valid
        print(f"{valid + bad} file(s): {valid} valid, {bad} invalid")
    return 1 if bad else 0


def cmd_apprec(args: argparse.Namespace) -> int:
    settings = _settings(args)
    options = _options(args, settings)
    policy = settings.apprec if settings else apprec.AppRecPolicy()
    if args.reject_schema_errors:
        policy = replace(policy, reject_schema_errors=True)
    path = Path(args.path)
    if not path.is_file():
        raise UsageError(f"{args.path}: no such file")
    verdict = examine_file(path, options)
    decision = apprec.decide(verdict, policy)
    if not decision.due or decision.xml is None:
        print(f"{args.path}: {decision.reason}", file=sys.stderr)
        return 1
    sys.stdout.write(decision.xml.decode("utf-8"))
    print(f"{args.path}: {decision.reason}", file=sys.stderr)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    settings = _settings(args, required=True)
    assert settings is not None
    options = _options(args, settings)
    registry = GPRegistry(settings.gp_registry, log_problems=False) if settings.gp_registry else None
    path = Path(args.path)
    if not path.is_file():
        raise UsageError(f"{args.path}: no such file")
    result = decide(examine_file(path, options), settings, registry)
    data = result.as_dict()
    if args.json:
        json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
        print()
    else:
        print("\n".join(explain_lines(data)))
    return 0


def explain_lines(d: dict[str, Any]) -> list[str]:
    out = [
        f"file:           {d['file']}",
        f"message:        {d['standard']} {d['msg_type'] or '-'} MsgId {d['msg_id'] or '-'}"
        + ("" if d["valid"] else "  (not valid: see `pfhjem-msg validate`)"),
        f"marked:         {'yes' if d['marked'] else 'no'}"
        + ("" if d["marked"] else f" ({d['not_marked_reason']})"),
    ]
    out += [f"  {m['where']}: «{m['text']}» (rule {m['rule']})" for m in d["marking"]]
    if d["contact_point"] is not None:
        out.append(f"contact point:  {d['contact_point']} ({d['contact_point_reason']})")
    if d["diagnosis_date"]:
        src = d["diagnosis_date_from"]
        out.append(f"diagnosis date: {d['diagnosis_date']} ({src['how']}, at {src['where']})")
    else:
        out.append("diagnosis date: not given")
    if d["municipal_contact_at"]:
        out.append(f"municipal contact named at {d['municipal_contact_at']}")
    if d.get("lifecycle"):
        out.append(f"lifecycle:      {d['lifecycle']} ({d['lifecycle_reason']}); plan: {d['plan_reason']}")
    out += [f"  pathway note: {n}" for n in d.get("pathway_notes", [])]
    out.append(f"municipality:   {d['municipality'] or '-'}")
    out.append(f"routing:        {d['routing_action']}: {d['routing_reason']}")
    for r in d["routing"]:
        out.append(
            f"  {r['role']:<9} {r['her_id'] or '-':<9} {r['name']} via {r['transport']}: {r['reason']}"
        )
    out += [f"  note: {n}" for n in d["notes"]]
    a = d["apprec"]
    if a["due"]:
        errors = " " + " ".join(a["errors"]) if a["errors"] else ""
        out.append(f"apprec:         {a['version']} status {a['status']}{errors}")
    else:
        out.append(f"apprec:         none ({a['reason']})")
    for w in d["followups"]:
        out.append(
            f"follow-up:      SP{w['point']} {w['window_start']} .. {w['window_end']} (anchor {w['anchor']})"
        )
    return out


def cmd_config_check(args: argparse.Namespace) -> int:
    """Load everything the configuration names and report every problem at once (exit 1)."""
    path = find_config(args.config)
    problems: list[str] = []
    settings = None
    try:
        settings = load(path)
        load_schema_set(settings.kith.schemas)
    except ConfigProblems as exc:
        problems += [p.text(exc.path) for p in exc.problems]
    except ConfigError as exc:  # the file is readable and valid, a schema it names is not
        if settings is None:
            raise
        problems.append(f"{path}: kith.schemas: {exc}")
    if settings is not None:
        if settings.gp_registry is not None:
            problems += GPRegistry(settings.gp_registry, log_problems=False).problems
        if not settings.municipalities:
            problems.append(f"{path}: municipality: none is configured: every message would go unrouted")
    for p in problems:
        print(f"problem: {p}")
    if problems:
        print(f"{path}: {len(problems)} problem(s)")
        return 1
    assert settings is not None
    names = ", ".join(m.name for m in settings.municipalities)
    print(f"{path}: OK; municipalities: {names}")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    """The effective configuration: defaults filled in, paths resolved, passwords masked."""
    path = find_config(args.config)
    try:
        data = effective(path)
    except ConfigProblems as exc:
        for p in exc.problems:
            print(f"problem: {p.text(exc.path)}", file=sys.stderr)
        print(f"{path}: {len(exc.problems)} problem(s); nothing shown", file=sys.stderr)
        return 1
    if args.json:
        json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
        print()
    else:
        sys.stdout.write(f"# effective configuration of {path}\n" + to_toml(data))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pfhjem_msg.daemon import Daemon, catch_early_reload

    if not args.once:
        catch_early_reload()  # systemd may send SIGHUP as soon as the process exists
    settings = _settings(args, required=True)
    assert settings is not None
    configure_logs(args.log_level)
    daemon = Daemon(settings)
    return daemon.run_once() if args.once else daemon.run_service()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pfhjem-msg",
        description="Receives KITH messages for a municipality, spots «Pakkeforløp hjem for pasienter "
        "med kreft», routes them and sends the AppRec.",
    )
    parser.add_argument("--version", action="version", version=f"pfhjem-msg {__version__}")
    from pfhjem_msg import cli_followups, cli_ops, cli_store
    from pfhjem_msg.cli_ops import config_option

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def schema_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE",
                       help="configuration file for the [kith] and [apprec] settings (default: none; "
                       "$PFHJEM_MSG_CONFIG is not read here)")  # fmt: skip
        p.add_argument(
            "--schemas",
            metavar="DIR",
            help="validate against the XSD files in DIR (e.g. the official set) instead of the product's own",
        )
        p.add_argument("--max-bytes", type=int, metavar="N", help="refuse input larger than N bytes")
        p.add_argument("--max-depth", type=int, metavar="N", help="refuse XML nested deeper than N")

    v = sub.add_parser("validate", help="check KITH XML files like a compiler checks code")
    out = v.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON array with an object per file, at the end")
    out.add_argument("--jsonl", action="store_true",
                     help="JSON Lines: one JSON object per file and line, written as each file is done")  # fmt: skip
    v.add_argument(
        "--jobs", type=int, metavar="N", help="worker processes for many files (default: one per CPU)"
    )
    schema_options(v)
    v.add_argument("paths", nargs="+", metavar="PATH", help="files, or directories searched for *.xml")
    v.set_defaults(func=cmd_validate)

    a = sub.add_parser("apprec", help="print the AppRec the daemon would send for a message")
    schema_options(a)
    a.add_argument(
        "--reject-schema-errors", action="store_true", help="send a negative AppRec (T02) for schema errors"
    )
    a.add_argument("path", metavar="PATH", help="the received message (XML or MIME mail)")
    a.set_defaults(func=cmd_apprec)

    e = sub.add_parser("explain", help="show what the daemon would do with one message, and why")
    e.add_argument("--json", action="store_true", help="one JSON object")
    config_option(e)
    e.add_argument("--schemas", metavar="DIR", help="validate against the XSD files in DIR")
    e.add_argument("path", metavar="PATH", help="the received message (XML or MIME mail)")
    e.set_defaults(func=cmd_explain)

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    cc = csub.add_parser("check", help="load the configuration and everything it names; report all problems")
    config_option(cc)
    cc.set_defaults(func=cmd_config_check)
    cs = csub.add_parser(
        "show", help="print the effective configuration: defaults filled in, paths resolved, secrets masked"
    )
    config_option(cs)
    cs.add_argument("--json", action="store_true", help="one JSON object")
    cs.set_defaults(func=cmd_config_show)

    r = sub.add_parser("run", help="run the daemon")
    config_option(r)
    r.add_argument(
        "--once", action="store_true", help="take in what is waiting, process and deliver it, exit"
    )
    r.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="the least severe log lines written to stderr (default info)")  # fmt: skip
    r.set_defaults(func=cmd_run)

    cli_ops.add_commands(sub)
    cli_followups.add_commands(sub)
    cli_store.add_commands(sub)
    return parser


def _command_parser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of the (sub)command the words name, so an unknown option is reported with
    that command's usage, not the top level's list of commands."""
    for word in argv:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subs and word in subs[0].choices:
            parser = subs[0].choices[word]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(words)
    if unknown:
        _command_parser(parser, words).error(
            f"unrecognized arguments: {' '.join(unknown)} (see the options above, or --help)"
        )
    try:
        code: int = args.func(args)
        return code
    except UsageError as exc:
        print(f"pfhjem-msg: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"pfhjem-msg: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except PfhjemError as exc:
        print(f"pfhjem-msg: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
