"""Operator commands against a real store filled by the real daemon: list, show, replay,
hold, release, discard, audit, status, prune; bad input; the CLI beside a running daemon."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from pfhjem_msg.cli import main
from pfhjem_msg.config import load
from pfhjem_msg.daemon import Daemon
from pfhjem_msg.followups import FollowupFilter
from pfhjem_msg.store.sqlite import SqliteStore
from tests.conftest import ROOT, SAMPLES, write_config
from tests.test_crash import make_messages, start

PATIENT_NAMES = ("Prøvestad", "Solveig")
NATIONAL_ID = "14835841481"


def _drop(tmp: Path, *names: str) -> None:
    for name in names:
        (tmp / "var" / "inbox" / name).write_bytes((SAMPLES / name).read_bytes())


def _run(config: Path) -> None:
    Daemon(load(config)).run_once()


def _cli(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    command, rest = args[0], args[1:]
    capsys.readouterr()  # what the daemon logged before
    code = main([*command.split(), "--config", str(config), *rest])
    out, err = capsys.readouterr()
    return code, out, err


def _store(tmp: Path) -> SqliteStore:
    return SqliteStore(tmp / "var" / "pfhjem-msg.sqlite3")


def _apprecs(tmp: Path) -> list[Path]:
    return sorted((tmp / "var" / "outbox").glob("apprec-*.xml"))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    config = write_config(tmp_path)
    _drop(tmp_path, "dlg11-marked-tema.xml", "dlg11-unmarked.xml", "broken-dtd.xml", "signed-tampered.xml")
    _run(config)
    return config


def test_list_filters_and_never_shows_patient_data_unless_asked(
    corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(capsys, corpus, "messages list")
    assert code == 0 and len(out.splitlines()) == 5
    assert not any(n in out for n in (*PATIENT_NAMES, NATIONAL_ID))
    code, out, _ = _cli(capsys, corpus, "messages list", "--state", "held", "--json")
    held = json.loads(out)
    assert [m["state"] for m in held] == ["held"] and held[0]["msg_type"] is None
    _, out, _ = _cli(capsys, corpus, "messages list", "--marked", "--json")
    assert {m["state"] for m in json.loads(out)} == {"done", "rejected"}
    _, out, _ = _cli(capsys, corpus, "messages list", "--unmarked", "--sender", "8100020", "--json")
    assert [m["marked"] for m in json.loads(out)] == [False]
    _, out, _ = _cli(
        capsys, corpus, "messages list", "--since", "1h", "--type", "DIALOG_HELSEFAGLIG", "--json"
    )
    assert len(json.loads(out)) == 3
    _, out, _ = _cli(capsys, corpus, "messages list", "--until", "2000-01-01", "--json")
    assert json.loads(out) == []
    code, out, _ = _cli(capsys, corpus, "messages list", "--show-patient", "--state", "done", "--marked")
    assert code == 0 and NATIONAL_ID in out and "Prøvestad" in out
    _, out, _ = _cli(capsys, corpus, "audit", "--json")
    assert [e["action"] for e in json.loads(out)] == ["show patient"]


def test_show_by_id_and_msgid_with_history_deliveries_and_raw(
    corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(capsys, corpus, "messages show", "5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0001", "--json")
    data = json.loads(out)
    assert code == 0 and data["id"] == 2 and data["state"] == "done" and data["apprec_sent"] == "1"
    moves = [e["to"] for e in data["events"] if e["to"]]
    assert moves == ["received", "parsed", "classified", "routed", "delivered", "done"]
    assert any(e["reason"].startswith("follow-up plan (diagnosis 2026-09-12)") for e in data["events"])
    assert {d["kind"] for d in data["deliveries"]} == {"apprec", "case_unit", "gp_copy"}
    assert all(d["status"] == "delivered" for d in data["deliveries"])
    assert data["lineage"] == {"replay_of": None, "replays": []}
    assert NATIONAL_ID not in out
    code, out, _ = _cli(capsys, corpus, "messages show", "2")
    assert code == 0 and "history:" in out and "deliveries:" in out and "Prøvestad" not in out
    capsys.readouterr()
    main(["messages", "show", "2", "--raw", "--config", str(corpus)])
    raw = capsys.readouterr().out
    assert raw.encode() == (SAMPLES / "dlg11-marked-tema.xml").read_bytes()


def test_failed_delivery_replayed_from_its_step_resends_only_that(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    blocker = tmp_path / "var" / "case-units" / "fjordvik"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory")  # the case unit's directory is wrongly a file: permanent error
    _drop(tmp_path, "dlg11-marked-tema.xml")
    _run(config)
    store = _store(tmp_path)
    assert store.message(1).state == "failed"  # type: ignore[union-attr]
    store.close()
    assert len(_apprecs(tmp_path)) == 1
    code, out, _ = _cli(capsys, config, "messages replay", "--state", "failed", "--dry-run")
    assert code == 0 and "would replay message 1 (failed): retry its failed deliveries" in out
    blocker.unlink()  # the operator fixes the directory
    code, out, _ = _cli(capsys, config, "messages replay", "1", "--reason", "directory fixed")
    assert code == 0 and "1 message(s) queued" in out
    _run(config)
    store = _store(tmp_path)
    row = store.message(1)
    events = store.events(1)
    store.close()
    assert row is not None and row.state == "done"
    assert any(e.actor.startswith("ops:") and e.reason.endswith("directory fixed") for e in events)
    assert len(_apprecs(tmp_path)) == 1, "the AppRec went once"
    assert len(list(blocker.iterdir())) == 1
    assert len(list((tmp_path / "var" / "outbox").glob("gpcopy-*.xml"))) == 1


def test_replay_from_start_uses_the_fixed_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, extra='[apprec]\nunknown_receiver = "hold"\n')
    text = (SAMPLES / "dlg11-marked-tema.xml").read_text(encoding="utf-8").replace(">83000", ">89000")
    (tmp_path / "var" / "inbox" / "m.xml").write_text(text, encoding="utf-8")
    _run(config)
    store = _store(tmp_path)
    assert store.message(1).state == "held"  # type: ignore[union-attr]
    store.close()
    assert len(_apprecs(tmp_path)) == 0  # held for an unknown receiver: the operator decides
    config.write_text(
        config.read_text(encoding="utf-8").replace('"8300010"]', '"8300010", "8900001", "8900010"]')
    )
    code, out, _ = _cli(capsys, config, "messages replay", "1", "--reason", "HER-id added")
    assert code == 0 and "process it again from the stored original" in out
    _run(config)
    store = _store(tmp_path)
    assert store.message(1).state == "done"  # type: ignore[union-attr]
    store.close()
    assert len(_apprecs(tmp_path)) == 1


def test_rejected_replay_says_no_second_apprec(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tmp = corpus.parent
    before = len(_apprecs(tmp))
    code, out, _ = _cli(capsys, corpus, "messages replay", "--state", "rejected", "--reason", "check again")
    assert code == 0 and "AppRec already sent (status 2 S01); it is not sent again" in out
    _run(corpus)
    assert len(_apprecs(tmp)) == before
    store = _store(tmp)
    (row,) = [store.message(i) for i in range(1, 5) if store.message(i).state == "rejected"]  # type: ignore[union-attr]
    assert row is not None and "AppRec not sent again" in (store.events(row.id)[-3].reason)
    store.close()


def test_done_needs_force_duplicate_and_then_replays_as_a_linked_new_message(
    corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp = corpus.parent
    code, _, err = _cli(capsys, corpus, "messages replay", "2")
    assert code == 2 and "--force-duplicate" in err and len(err.strip().splitlines()) == 1
    before = len(_apprecs(tmp))
    code, out, _ = _cli(
        capsys, corpus, "messages replay", "2", "--force-duplicate", "--reason", "case unit lost it"
    )
    assert code == 0 and "→ message 5" in out
    _run(corpus)
    assert len(_apprecs(tmp)) == before, "no second AppRec for the same received message"
    _, out, _ = _cli(capsys, corpus, "messages show", "5", "--json")
    new = json.loads(out)
    assert new["state"] == "done" and new["lineage"]["replay_of"] == 2
    assert {d["kind"] for d in new["deliveries"]} == {"case_unit", "gp_copy"}
    _, out, _ = _cli(capsys, corpus, "messages show", "2", "--json")
    assert json.loads(out)["lineage"]["replays"] == [5]
    copies = list((tmp / "var" / "case-units" / "fjordvik").glob("*5f0c0001*"))
    assert len(copies) == 2  # delivered once more, as asked


def test_hold_release_discard_and_the_audit_trail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    _drop(tmp_path, "dlg11-marked-tema.xml", "dlg11-unmarked.xml")
    daemon = Daemon(load(config))
    daemon.spool.scan()  # type: ignore[union-attr]  # stored, not processed yet
    code, out, _ = _cli(capsys, config, "messages hold", "1", "--reason", "hospital asked us to wait")
    assert code == 0 and "received → held" in out
    code, _, err = _cli(capsys, config, "messages hold", "1", "--reason", "again")
    assert code == 2 and "is held and cannot be held" in err
    code, _, err = _cli(capsys, config, "messages discard", "2", "--reason", "sent to us by mistake")
    assert code == 2 and "--yes" in err
    code, out, _ = _cli(capsys, config, "messages discard", "2", "--reason", "sent to us by mistake", "--yes")
    assert code == 0 and "→ discarded" in out
    daemon.run_once()
    store = _store(tmp_path)
    assert store.message(1).state == "held" and store.message(2).state == "discarded"  # type: ignore[union-attr]
    store.close()
    assert _apprecs(tmp_path) == []
    code, out, _ = _cli(capsys, config, "messages release", "1")
    assert code == 0 and "held → received" in out
    _run(config)
    store = _store(tmp_path)
    assert store.message(1).state == "done"  # type: ignore[union-attr]
    store.close()
    code, out, _ = _cli(capsys, config, "audit", "--json")
    actions = [(e["message_id"], e["action"]) for e in json.loads(out)]
    assert actions == [(1, "received → held"), (2, "received → discarded"), (1, "held → received")]
    assert all(e["actor"].startswith("ops:") for e in json.loads(out))


def test_status_says_when_an_operator_is_needed(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, corpus, "status", "--json")
    data = json.loads(out)
    assert code == 1 and data["needs_operator"] and data["counts"]["held"] == 1
    # the held message waits for a person, not for the daemon: counted on its own, not unfinished
    assert data["held"] == 1 and data["oldest_unfinished"] is None and data["last_intake"]
    assert data["deliveries_waiting"] == 0 and data["gp_copies_without_apprec_96h"] == 0
    main(
        [
            "messages",
            "discard",
            "1",
            "--reason",
            "a DTD, not from a hospital",
            "--yes",
            "--config",
            str(corpus),
        ]
    )
    capsys.readouterr()
    code, out, _ = _cli(capsys, corpus, "status")
    assert code == 0 and out.strip().endswith("OK")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("messages show", "999"), "no message has the id or MsgId '999'"),
        (("messages show", "no-such-msgid"), "no message has the id"),
        (("messages replay",), "say what to replay"),
        (("messages replay", "1", "--state", "failed"), "not both"),
        (("messages replay", "--state", "done", "--since", "2d", "--until", "3d"), "--since must be earlier"),
        (("messages replay", "--state", "routed"), "cannot be replayed"),
        (("messages release", "2"), "only a held message can be released"),
        (("prune",), "no retention is configured"),
    ],
)
def test_bad_operator_input_is_one_line_and_exit_2(
    corpus: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: str
) -> None:
    code, _, err = _cli(capsys, corpus, *args)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_missing_and_locked_store_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    code, _, err = _cli(capsys, config, "status")
    assert code == 2 and "there is no store" in err and not (tmp_path / "var" / "pfhjem-msg.sqlite3").exists()
    _drop(tmp_path, "dlg11-unmarked.xml")
    _run(config)
    holder = sqlite3.connect(tmp_path / "var" / "pfhjem-msg.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer keeps the store for longer than we wait
    try:
        # a command that writes (opening the store no longer does: it does not migrate)
        code, _, err = _cli(capsys, config, "status", "--ack-refused")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 2 and "locked by another process" in err and len(err.strip().splitlines()) == 1


def test_prune_deletes_old_originals_and_the_file_shrinks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, extra="[retention]\npayload_days = 30\nmetadata_days = 365\n")
    inbox = tmp_path / "var" / "inbox"
    filler = "<p>" + "Oppfølging i hjemmet. " * 2000 + "</p>"
    for i, (_, data) in enumerate(make_messages(60, random.Random(3))):
        inbox.joinpath(f"m{i}.xml").write_bytes(data.replace(b"</div>", filler.encode() + b"</div>", 1))
    _run(config)
    db = tmp_path / "var" / "pfhjem-msg.sqlite3"
    store = _store(tmp_path)
    store._db.execute("UPDATE messages SET updated_at = '2020-01-01T00:00:00+00:00' WHERE id <= 50")
    store._db.execute(
        "UPDATE messages SET updated_at = '2026-01-01T00:00:00+00:00' WHERE id > 50 AND id <= 55"
    )
    followed = {f.source_message_id for f in store.followups(FollowupFilter(), date(2026, 11, 1))}
    store.close()
    assert followed and max(followed) <= 50  # kept while a follow-up still needs them
    code, out, _ = _cli(capsys, config, "prune", "--dry-run")
    kept = len(followed)
    assert (
        code == 0
        and f"would delete the originals of {55 - kept}" in out
        and f"would delete {50 - kept}" in out
    )
    size = db.stat().st_size
    code, out, _ = _cli(capsys, config, "prune")
    assert code == 0 and f"deleted the originals of {55 - kept}" in out
    assert db.stat().st_size < size / 2, (size, db.stat().st_size)
    store = _store(tmp_path)
    assert store.counts() == {"done": 10 + kept}
    assert store.message(52).pruned and not store.message(60).pruned  # type: ignore[union-attr]
    assert store.raw(60).lstrip().startswith(b"<")
    assert all(store.raw(m) for m in followed)
    store.close()
    code, _, err = _cli(capsys, config, "messages replay", "52", "--force-duplicate")
    assert code == 2 and "deleted by retention" in err


def test_bulk_replay_killed_halfway_loses_and_doubles_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    blocker = tmp_path / "var" / "case-units" / "fjordvik"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory")
    inbox = tmp_path / "var" / "inbox"
    messages = make_messages(120, random.Random(11))
    for i, (_, data) in enumerate(messages):
        inbox.joinpath(f"m{i:03d}.xml").write_bytes(data)
    _run(config)
    store = _store(tmp_path)
    failed = store.counts().get("failed", 0)
    store.close()
    assert failed > 60  # every one with a case-unit copy for Fjordvik
    blocker.unlink()
    command = [sys.executable, "-m", "pfhjem_msg", "messages", "replay", "--state", "failed", "--reason", "bulk",
               "--config", str(config)]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = _store(tmp_path)
    deadline = time.time() + 30
    while store.counts().get("failed", 0) == failed and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # halfway (or wherever it got to)
    proc.wait()
    store.close()
    again = subprocess.run(command, cwd=ROOT, capture_output=True)
    assert again.returncode == 0, again.stderr
    _run(config)
    store = _store(tmp_path)
    assert store.counts() == {"done": 120}
    store.close()
    apprecs = _apprecs(tmp_path)
    assert len(apprecs) == 120 and len({p.name.split("-")[1] for p in apprecs}) == 120
    assert len(list(blocker.iterdir())) == failed


def test_cli_and_running_daemon_share_the_store(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    log = tmp_path / "daemon.log"
    daemon = start(config, log)
    try:
        inbox = tmp_path / "var" / "inbox"
        messages = make_messages(150, random.Random(5))
        slow = []
        for i, (_, data) in enumerate(messages):
            inbox.joinpath(f".m{i:03d}.tmp").write_bytes(data)
            os.replace(
                inbox / f".m{i:03d}.tmp", inbox / f"m{i:03d}.xml"
            )  # the hub writes atomically (settle 0)
            if i % 25 == 0:
                t0 = time.perf_counter()
                for args in (["status", "--json"], ["messages", "list", "--limit", "20", "--json"]):
                    r = subprocess.run([sys.executable, "-m", "pfhjem_msg", *args, "--config", str(config)],
                                       cwd=ROOT, capture_output=True)  # fmt: skip
                    assert r.returncode in (0, 1), r.stderr
                    json.loads(r.stdout)
                slow.append(time.perf_counter() - t0)
            time.sleep(0.01)
        deadline = time.time() + 60
        while time.time() < deadline:
            store = _store(tmp_path)
            counts = store.counts()
            store.close()
            if counts == {"done": 150}:
                break
            time.sleep(0.2)
        assert counts == {"done": 150}, counts
        assert max(slow) < 10, slow
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    text = log.read_text(encoding="utf-8")
    assert "round_failed" not in text and "Traceback" not in text


def test_systemd_unit_runs_as_its_own_user_restarts_and_keeps_state_private() -> None:
    unit = (ROOT / "config" / "pfhjem-msg.service").read_text(encoding="utf-8")
    lines = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in unit.splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert lines["User"] == "pfhjem-msg" and lines["Restart"] == "on-failure"
    assert lines["StateDirectory"] == "pfhjem-msg" and lines["StateDirectoryMode"] == "0700"
    assert lines["ExecStart"].endswith("run --config /etc/pfhjem-msg/config.toml")
    alerts = (ROOT / "config" / "alerts.example.yml").read_text(encoding="utf-8")
    for expr in ('state="failed"', 'state="held"', "pfhjem_oldest_unfinished_seconds > 3600",
                 "pfhjem_last_intake_timestamp_seconds > 3600", "pfhjem_delivery_failures_total"):  # fmt: skip
        assert expr in alerts


def test_state_directory_is_created_private(tmp_path: Path) -> None:
    from pfhjem_msg.store import open_store

    store = open_store(tmp_path / "state")
    store.close()
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
