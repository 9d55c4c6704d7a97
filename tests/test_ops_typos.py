"""Operator commands that catch typos and say what they mean: unknown filter values are
refused with the valid ones, times without an offset are Norwegian time, every option has a
help line, validate streams JSON Lines, held messages have their own line and alert, the
audit says when it is empty, and delivery log lines name the error class and destination."""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pfhjem_msg import metrics
from pfhjem_msg.cli import build_parser, main
from pfhjem_msg.cli_ops import STATES, parse_time
from pfhjem_msg.config import load
from pfhjem_msg.daemon import Daemon
from pfhjem_msg.kith.codes import MESSAGE_TYPES
from pfhjem_msg.store import open_store
from tests.conftest import ROOT, SAMPLES, free_port, write_config

NATIONAL_ID = "14835841481"
FJORDBU = """
[[municipality]]
name = "Fjordbu kommune"
her_ids = ["8600001", "8600010"]
case_unit = { her_id = "8600010", name = "Servicetorget", transport = "dir", path = "var/case-units/fjordbu" }
"""


def _cli(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*args, "--config", str(config)])
    out, err = capsys.readouterr()
    assert NATIONAL_ID not in out + err
    return code, out, err


@pytest.fixture
def processed(tmp_path: Path) -> Path:
    """Three municipalities (two start with «Fjord»), a marked, an unmarked and a held message."""
    config = write_config(tmp_path, extra=FJORDBU)
    for name in ("dlg11-marked-tema.xml", "dlg11-unmarked.xml", "broken-dtd.xml"):
        (tmp_path / "var" / "inbox" / name).write_bytes((SAMPLES / name).read_bytes())
    Daemon(load(config)).run_once()
    return config


# -- typos in filters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("messages", "list", "--state", "faild"), "--state 'faild' is unknown (did you mean failed?)"),
        (("messages", "replay", "--state", "helt"), "--state 'helt' is unknown (did you mean held?)"),
        (("messages", "list", "--type", "DIALOG_HELSEFAGLI"), "--type 'DIALOG_HELSEFAGLI' is unknown"),
        (("followups", "list", "--municipality", "Fjordvig"), "--municipality 'Fjordvig' is unknown"),
        (("followups", "export", "--ics", "x.ics", "--municipality", "Oslo"), "--municipality 'Oslo'"),
    ],
)
def test_an_unknown_filter_value_is_exit_2_listing_the_valid_ones(
    processed: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    code, out, err = _cli(capsys, processed, *args)
    assert code == 2 and out == "" and expected in err and len(err.strip().splitlines()) == 1, err
    if "--state" in args:
        assert all(state in err for state in STATES)
    if "--type" in args:
        assert all(t in err for t in MESSAGE_TYPES) and "DIALOG_INNBYGGER_…" in err
    if "--municipality" in args:
        assert all(m in err for m in ("Fjordvik kommune", "Fjordbu kommune", "Åsli kommune"))


def test_filter_values_in_another_case_still_match(
    processed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(capsys, processed, "messages", "list", "--state", "HELD", "--json")
    assert code == 0 and [m["state"] for m in json.loads(out)] == ["held"]
    code, out, _ = _cli(capsys, processed, "messages", "list", "--type", "dialog_helsefaglig", "--json")
    assert code == 0 and len(json.loads(out)) == 2


def test_a_type_not_in_our_list_is_accepted_when_a_stored_message_has_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    data = (SAMPLES / "dlg11-unmarked.xml").read_text(encoding="utf-8")
    data = data.replace(
        '<Type V="DIALOG_HELSEFAGLIG" DN="Helsefaglig dialog"/>', '<Type V="DIALOG_NYTT" DN="Ny"/>'
    )
    (tmp_path / "var" / "inbox" / "a.xml").write_text(data, encoding="utf-8")
    Daemon(load(config)).run_once()
    code, out, _ = _cli(capsys, config, "messages", "list", "--type", "dialog_nytt", "--json")
    assert code == 0 and [m["msg_type"] for m in json.loads(out)] == ["DIALOG_NYTT"]
    code, _, err = _cli(capsys, config, "messages", "list", "--type", "DIALOG_NYT")
    assert code == 2 and "is unknown" in err


def test_municipality_is_a_case_insensitive_prefix_and_ambiguity_names_the_matches(
    processed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(capsys, processed, "followups", "list", "--municipality", "Fjordvik", "--json")
    assert code == 0 and [f["municipality"] for f in json.loads(out)] == ["Fjordvik kommune"] * 2
    code, out, _ = _cli(
        capsys, processed, "followups", "list", "--municipality", "fjordvik KOMMUNE", "--json"
    )
    assert code == 0 and len(json.loads(out)) == 2
    code, out, _ = _cli(capsys, processed, "followups", "list", "--municipality", "Åsli", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, err = _cli(capsys, processed, "followups", "list", "--municipality", "fjord")
    assert code == 2 and out == ""
    assert "'fjord' matches Fjordbu kommune, Fjordvik kommune: give enough of the name" in err


# -- Norwegian time ----------------------------------------------------------------------------


def test_a_time_without_offset_is_norwegian_time_across_the_clock_shifts() -> None:
    assert parse_time("2026-07-01T08:00") == datetime(2026, 7, 1, 6, 0, tzinfo=UTC)  # CEST, UTC+2
    assert parse_time("2026-12-01T08:00") == datetime(2026, 12, 1, 7, 0, tzinfo=UTC)  # CET, UTC+1
    assert parse_time("2026-03-29") == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # midnight before the shift
    assert parse_time("2026-03-30") == datetime(2026, 3, 29, 22, 0, tzinfo=UTC)  # midnight after it
    assert parse_time("2026-07-01T08:00Z") == datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
    assert parse_time("2026-07-01T08:00+00:00") == datetime(2026, 7, 1, 8, 0, tzinfo=UTC)


def test_since_and_until_select_by_norwegian_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    store = open_store(tmp_path / "var")
    raw = (SAMPLES / "dlg11-unmarked.xml").read_bytes()
    moments = [
        datetime(2026, 7, 1, 6, 30, tzinfo=UTC),  # 08:30 in Norway (summer)
        datetime(2026, 10, 25, 10, 30, tzinfo=UTC),  # 11:30, the day the clocks go back
        datetime(2026, 10, 25, 11, 30, tzinfo=UTC),  # 12:30 that day
        datetime(2026, 12, 1, 7, 30, tzinfo=UTC),  # 08:30 in Norway (winter)
    ]
    msg_id = b"5f0c000b-6b1d-4c8e-9a2f-7d3e1b0a000b"
    ids = [
        store.accept(raw.replace(msg_id, msg_id[:-1] + str(i).encode()), "spool:test", at).message_id
        for i, at in enumerate(moments)
    ]
    assert len(set(ids)) == 4
    store.close()

    def listed(*window: str) -> list[int]:
        code, out, _ = _cli(capsys, config, "messages", "list", "--json", *window)
        assert code == 0
        return sorted(m["id"] for m in json.loads(out))

    # read as UTC, none of these windows would hold the message it is meant to find
    assert listed("--since", "2026-07-01T08:00", "--until", "2026-07-01T09:00") == [ids[0]]
    assert listed("--since", "2026-12-01T08:00", "--until", "2026-12-01T09:00") == [ids[3]]
    assert listed("--since", "2026-10-24T12:00", "--until", "2026-10-25T12:00") == [ids[1]]
    assert listed("--since", "2026-10-25", "--until", "2026-10-26") == [ids[1], ids[2]]
    code, out, _ = _cli(capsys, config, "messages", "list", "--until", "2026-08-01")
    assert code == 0 and "RECEIVED (Oslo)" in out and "2026-07-01 08:30" in out


# -- help --------------------------------------------------------------------------------------


def _walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {a.dest for a in action._choices_actions if a.help}
            for name, sub in action.choices.items():
                if name not in helped:
                    missing.append(f"{path} {name} (the command itself)")
                missing += _walk(sub, f"{path} {name}")
        elif not (action.help or "").strip():
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_command_option_and_argument_has_a_help_line() -> None:
    assert _walk(build_parser(), "pfhjem-msg") == []


def test_config_option_says_the_same_default_everywhere_it_has_one() -> None:
    parser = build_parser()
    texts = {}
    for command in ("run", "explain", "status", "messages list", "followups list", "audit", "config check",
                    "config show"):  # fmt: skip
        sub = parser
        for word in command.split():
            sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
        texts[command] = next(a.help for a in sub._actions if "--config" in a.option_strings)
    assert len(set(texts.values())) == 1, texts
    assert "$PFHJEM_MSG_CONFIG, then /etc/pfhjem-msg/config.toml" in texts["run"]


def test_readme_and_help_agree_on_validate_json() -> None:
    validate = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[
        "validate"
    ]
    helps = {a.option_strings[0]: a.help for a in validate._actions if a.option_strings}
    assert "one JSON array" in str(helps["--json"]) and "one JSON object per file" in str(helps["--jsonl"])
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "--json samples/ > report.json # one JSON array, an object per file" in readme
    assert "--jsonl" in readme


# -- validate --jsonl --------------------------------------------------------------------------


class _FlushRecorder(io.StringIO):
    """Standard output that remembers what had been written at each flush."""

    def __init__(self) -> None:
        super().__init__()
        self.at_flush: list[str] = []

    def flush(self) -> None:
        self.at_flush.append(self.getvalue())
        super().flush()


def test_validate_jsonl_streams_one_object_per_line_flushed_per_file(monkeypatch: pytest.MonkeyPatch) -> None:
    files = [str(SAMPLES / n) for n in ("dlg11-marked-tema.xml", "broken-dtd.xml", "epi12-unmarked.xml")]
    out = _FlushRecorder()
    monkeypatch.setattr(sys, "stdout", out)
    code = main(["validate", "--jsonl", "--jobs", "1", *files])
    assert code == 1  # broken-dtd.xml is not valid
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["file"] for line in lines] == files
    # after the k-th file, exactly k whole lines had been handed on
    assert [snapshot.count("\n") for snapshot in out.at_flush[:3]] == [1, 2, 3]
    assert all(s.endswith("\n") for s in out.at_flush)
    assert NATIONAL_ID not in out.getvalue()


def test_validate_json_and_jsonl_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--json", "--jsonl", str(SAMPLES / "broken-dtd.xml")])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err


# -- held messages: their own line and alert ---------------------------------------------------


def test_held_messages_have_their_own_status_line_and_are_not_unfinished(
    processed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(capsys, processed, "status")
    assert code == 1  # held still needs an operator
    assert "held:        1 message(s) waiting for an operator" in out
    assert "unfinished:" not in out  # everything else is done
    code, out, _ = _cli(capsys, processed, "status", "--json")
    data = json.loads(out)
    assert data["held"] == 1 and data["oldest_unfinished"] is None
    # the gauges the alerts read: the held message is in pfhjem_messages{state="held"}, not in
    # the oldest-unfinished age
    store = open_store(processed.parent / "var", create=False)
    now = datetime.now(UTC)
    metrics.update_status(store.status_facts(now, now - timedelta(hours=96)), now.timestamp())
    store.close()
    assert metrics.REGISTRY.get_sample_value("pfhjem_oldest_unfinished_seconds") == 0.0
    assert metrics.REGISTRY.get_sample_value("pfhjem_messages", {"state": "held"}) == 1.0


def _alerts() -> dict[str, str]:
    """alert name → expression, from the YAML (block scalars included)."""
    alerts: dict[str, str] = {}
    lines = (ROOT / "config" / "alerts.example.yml").read_text(encoding="utf-8").splitlines()
    name = None
    for i, line in enumerate(lines):
        m = re.match(r"\s*- alert: (\w+)$", line)
        if m:
            name = m.group(1)
            continue
        m = re.match(r"(\s*)expr: (.*)$", line)
        if m and name:
            if m.group(2).strip() != "|":
                alerts[name] = m.group(2).strip()
                continue
            indent = len(m.group(1))
            block = []
            for rest in lines[i + 1 :]:
                if rest.strip() and len(rest) - len(rest.lstrip()) <= indent:
                    break
                block.append(rest.strip())
            alerts[name] = " ".join(block).strip()
    return alerts


def test_alert_rules_use_metrics_and_labels_that_exist() -> None:
    alerts = _alerts()
    assert {"PfhjemMessagesHeld", "PfhjemMessageUnfinished", "PfhjemFollowUpOverdue", "PfhjemDown"} <= set(
        alerts
    )
    collectors = metrics.REGISTRY._names_to_collectors
    for name, expr in alerts.items():
        for metric, selector in re.findall(r"\b(pfhjem_\w+)(\{[^}]*\})?", expr):
            assert metric in collectors, (name, metric)
            labels = set(getattr(collectors[metric], "_labelnames", ()))
            for label in re.findall(r"(\w+)\s*=~?", selector):
                assert label in labels, (name, metric, label)
            for group in re.findall(r"by \(([^)]*)\)", expr):
                assert {g.strip() for g in group.split(",")} <= labels, (name, group)
    assert alerts["PfhjemMessagesHeld"] == 'pfhjem_messages{state="held"} > 0'
    # the unfinished rule reads the age gauge, which the store fills without held messages
    # (test_held_messages_have_their_own_status_line_and_are_not_unfinished)
    assert alerts["PfhjemMessageUnfinished"] == "pfhjem_oldest_unfinished_seconds > 3600"
    assert 'pfhjem_followups{condition="overdue"}' in alerts["PfhjemFollowUpOverdue"]


def test_time_of_day_rules_say_utc_and_the_readme_lists_every_alert() -> None:
    text = (ROOT / "config" / "alerts.example.yml").read_text(encoding="utf-8")
    for block in re.split(r"\n\s*- alert: ", text)[1:]:
        if "hour()" in block or "day_of_week()" in block:
            assert "UTC" in block and "CET" in block and "CEST" in block, block
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    in_table = set(re.findall(r"^\| `(Pfhjem\w+)` \|", readme, re.M))
    assert in_table == set(_alerts())


# -- audit, delivery logs ----------------------------------------------------------------------


def test_an_empty_audit_says_so(processed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, processed, "audit")
    assert code == 0 and out.startswith("no audit entries: no operator has")
    code, out, _ = _cli(capsys, processed, "audit", "--since", "2026-11-01")
    assert code == 0 and "no audit entries since 2026-11-01T00:00+01:00" in out
    code, out, _ = _cli(capsys, processed, "audit", "--json")
    assert code == 0 and json.loads(out) == []


def test_delivery_retry_and_failed_log_lines_name_error_class_and_destination(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller

    answers = ["451 4.3.0 try later", "550 5.1.1 no such user"]

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            return answers.pop(0) if answers else "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        config = write_config(
            tmp_path,
            case_unit='transport = "smtp", address = "tildeling@fjordvik.example"',
            extra=f'[smtp]\nhost = "127.0.0.1"\nport = {port}\n[retry]\nbase_seconds = 0.01\njitter = 0\n',
        )
        (tmp_path / "var" / "inbox" / "a.xml").write_bytes((SAMPLES / "dlg11-unmarked.xml").read_bytes())
        lines = []
        for _ in range(2):  # the first run meets the 451, the second (retry due) the 550
            proc = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                                  capture_output=True, cwd=ROOT, timeout=120, check=True)  # fmt: skip
            assert NATIONAL_ID.encode() not in proc.stdout + proc.stderr
            lines += [json.loads(x) for x in proc.stderr.decode().splitlines() if x.startswith("{")]
    finally:
        controller.stop()
    assert answers == []
    (retry,) = [x for x in lines if x["event"] == "delivery.retry"]
    (failed,) = [x for x in lines if x["event"] == "delivery.failed"]
    for line in (retry, failed):
        assert line["destination"] == "smtp:tildeling@fjordvik.example" and line["kind"] == "default"
        assert line["error_class"] == "SMTPDataError"
    assert retry["level"] == "warning" and retry["next_attempt_at"] and failed["level"] == "error"
