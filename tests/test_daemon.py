"""The daemon end to end, with real files, a real SQLite store and real SMTP servers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from lxml import etree

from pfhjem_msg.config import load
from pfhjem_msg.daemon import Daemon
from pfhjem_msg.kith.parse import Limits, parse_xml
from pfhjem_msg.kith.schemas import SchemaSet
from pfhjem_msg.store.sqlite import SqliteStore
from tests.conftest import ROOT, SAMPLES, free_port, sample_table, write_config
from tools import make_samples as ms


def _run_once(config: Path) -> None:
    Daemon(load(config)).run_once()


def _store(tmp: Path) -> SqliteStore:
    return SqliteStore(tmp / "var" / "pfhjem-msg.sqlite3")


def _drop(tmp: Path, *names: str) -> None:
    """As the hub does it: written aside, renamed into the spool (the tests run with settle 0)."""
    inbox = tmp / "var" / "inbox"
    for name in names:
        (inbox / f".{name}.tmp").write_bytes((SAMPLES / name).read_bytes())
        os.replace(inbox / f".{name}.tmp", inbox / name)


def test_demo_corpus_through_the_spool(tmp_path: Path, official_schemas: SchemaSet) -> None:
    config = write_config(tmp_path)
    rows = sample_table()
    _drop(tmp_path, *(r.file for r in rows))
    _run_once(config)
    assert list((tmp_path / "var" / "inbox").iterdir()) == [tmp_path / "var" / "inbox" / ".claimed"]
    store = _store(tmp_path)
    states = {
        store.message(i).source.split(":", 1)[1]: store.message(i).state for i in range(1, len(rows) + 1)
    }  # type: ignore[union-attr]
    store.close()
    for row in rows:
        state = states[row.file]
        if row.apprec == "none" and row.standard.startswith("apprec"):
            assert state == "done", row.file  # receipts for nothing we sent: recorded and done
        elif row.apprec == "none":
            assert state == "held", row.file
        elif row.apprec.startswith("2"):
            assert state == "rejected", row.file
        elif row.file == "signed-valid.xml":
            assert state == "duplicate"  # signed-tampered.xml came first with the same MsgId
        else:
            assert state == "done", row.file
    outbox = tmp_path / "var" / "outbox"
    apprecs = sorted(outbox.glob("apprec-*.xml"))
    assert len(apprecs) == sum(1 for r in rows if r.apprec != "none") - 1  # the duplicate gets none
    for path in apprecs + sorted(outbox.glob("gpcopy-*.xml")):
        doc = parse_xml(path.read_bytes(), Limits()).document
        assert doc is not None and official_schemas.validate(doc) == [], path.name
    gp_copies = sorted(outbox.glob("gpcopy-*.xml"))
    assert len(gp_copies) >= 10
    case_unit = tmp_path / "var" / "case-units" / "fjordvik"
    delivered = {p.name.split("-", 1)[1] for p in case_unit.iterdir()}
    assert "5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0001.xml" in delivered
    original = (SAMPLES / "dlg11-marked-tema.xml").read_bytes()
    assert any(p.read_bytes() == original for p in case_unit.iterdir())


def test_gp_copy_carries_text_topic_and_attachment(tmp_path: Path, official_schemas: SchemaSet) -> None:
    config = write_config(tmp_path)
    _drop(tmp_path, "dlg11-marked-attachment.xml")
    _run_once(config)
    (copy,) = (tmp_path / "var" / "outbox").glob("gpcopy-*.xml")
    root = etree.fromstring(copy.read_bytes())
    ns = {
        "m": "http://www.kith.no/xmlstds/msghead/2006-05-24",
        "d": "http://www.kith.no/xmlstds/dialog/2013-01-23",
    }
    assert root.find("m:MsgInfo/m:Type", ns).get("V") == "DIALOG_HELSEFAGLIG"
    assert root.findtext(".//d:Notat/d:Tema", namespaces=ns) == "Pakkeforløp hjem for pasienter med kreft"
    assert root.find(".//d:Notat/d:TemaKodet", ns).get("V") == "6"
    assert "Behovskartlegging" in root.findtext(".//d:TekstNotatInnhold", namespaces=ns)
    receiver = root.find("m:MsgInfo/m:Receiver/m:Organisation", ns)
    assert receiver.findtext("m:Ident/m:Id", namespaces=ns) == ms.GP_OFFICE[1]
    assert receiver.findtext("m:HealthcareProfessional/m:Ident/m:Id", namespaces=ns) == ms.GP[2]
    docs = root.findall("m:Document", ns)
    assert len(docs) == 2 and docs[1].findtext("m:RefDoc/m:MimeType", namespaces=ns) == "application/pdf"
    assert official_schemas.validate(root) == []


def test_incoming_apprec_is_matched_and_a_rejection_holds(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _drop(tmp_path, "dlg11-marked-tema.xml")
    _run_once(config)
    (copy,) = (tmp_path / "var" / "outbox").glob("gpcopy-*.xml")
    out_id = etree.fromstring(copy.read_bytes()).findtext("{*}MsgInfo/{*}MsgId")
    receipt = ms.apprec("1.1", ms.uid(88), out_id, ("2", "Avvist"),
                        '<Error V="E21" S="2.16.578.1.12.4.1.1.8221" DN="Mottaker finnes ikke"/>')  # fmt: skip
    (tmp_path / "var" / "inbox" / "receipt.xml").write_text(receipt, encoding="utf-8")
    _run_once(config)
    store = _store(tmp_path)
    assert store.message(1).state == "held"  # type: ignore[union-attr]
    assert "rejected by its receiver" in (store.message(1).state_reason or "")  # type: ignore[union-attr]
    assert store.message(2).state == "done"  # type: ignore[union-attr]
    store.close()


def test_gp_copy_without_apprec_for_96_hours_is_flagged_once(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _drop(tmp_path, "dlg11-marked-tema.xml")
    clock = [datetime(2026, 11, 2, 9, 0, tzinfo=UTC)]
    daemon = Daemon(load(config), clock=lambda: clock[0])
    while daemon.round():
        pass
    assert daemon.pipeline.flag_overdue_receipts() == 0
    clock[0] += timedelta(hours=95)
    assert daemon.pipeline.flag_overdue_receipts() == 0
    clock[0] += timedelta(hours=2)
    assert daemon.pipeline.flag_overdue_receipts() == 1
    assert daemon.pipeline.flag_overdue_receipts() == 0  # once
    last = daemon.store.events(1)[-1]
    assert "no AppRec for the GP copy" in last.reason and "within 96 hours" in last.reason
    daemon.pipeline.close()
    daemon.store.close()


def test_duplicate_msgid_gets_no_second_apprec(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    original = (SAMPLES / "dlg11-marked-tema.xml").read_text(encoding="utf-8")
    (tmp_path / "var" / "inbox" / "a.xml").write_text(original, encoding="utf-8")
    (tmp_path / "var" / "inbox" / "b.xml").write_text(
        original.replace("Behovskartlegging", "Behovs-kartlegging"), encoding="utf-8"
    )
    (tmp_path / "var" / "inbox" / "c.xml").write_text(original, encoding="utf-8")  # same bytes: one message
    _run_once(config)
    store = _store(tmp_path)
    assert store.counts() == {"done": 1, "duplicate": 1}
    store.close()
    assert len(list((tmp_path / "var" / "outbox").glob("apprec-*.xml"))) == 1


def test_file_still_being_written_is_left_alone(tmp_path: Path) -> None:
    config = write_config(tmp_path, settle=1.0)
    (tmp_path / "var" / "inbox" / "fresh.xml").write_bytes(b"<MsgHead")
    later = time.time() + 3600  # changed again and again: it never settles while we wait
    os.utime(tmp_path / "var" / "inbox" / "fresh.xml", (later, later))
    _run_once(config)
    assert (tmp_path / "var" / "inbox" / "fresh.xml").exists()


def test_a_message_that_crashes_the_pipeline_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, extra="[retry]\nbase_seconds = 0\njitter = 0\npipeline_attempts = 3\n")
    _drop(tmp_path, "dlg11-marked-tema.xml", "epi12-marked-msgdescr.xml")
    import pfhjem_msg.drafting as drafting

    real = drafting.decide

    def boom(verdict, *a, **k):  # type: ignore[no-untyped-def]
        if verdict.standard == "epikrise-1.2":
            raise RuntimeError("simulated bug")
        return real(verdict, *a, **k)

    monkeypatch.setattr(drafting, "decide", boom)
    _run_once(config)
    store = _store(tmp_path)
    states = {store.message(i).msg_type or store.message(i).source: store.message(i).state for i in (1, 2)}  # type: ignore[union-attr]
    events = [e.reason for e in store.events(2)]
    store.close()
    assert sorted(states.values()) == ["done", "failed"]
    assert sum("RuntimeError: simulated bug" in r for r in events) == 3
    assert "crashed or failed 3 times" in events[-1]


def test_transient_smtp_failure_is_retried_and_5xx_fails(tmp_path: Path) -> None:
    received: list[bytes] = []
    answers = ["451 4.3.0 try later", "250 OK"]

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            answer = answers.pop(0) if answers else "250 OK"
            if answer.startswith("250"):
                received.append(envelope.original_content or envelope.content)
            return answer

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        config = write_config(
            tmp_path,
            case_unit='transport = "smtp", address = "tildeling@fjordvik.example"',
            extra=f'[smtp]\nhost = "127.0.0.1"\nport = {port}\n[retry]\nbase_seconds = 0.01\njitter = 0\n',
        )
        _drop(tmp_path, "dlg11-unmarked.xml")
        settings = load(config)
        clock = [datetime(2026, 11, 1, tzinfo=UTC)]
        daemon = Daemon(settings, clock=lambda: clock[0])
        for _ in range(5):  # until the delivery was tried once and got the 451
            if answers == ["250 OK"]:
                break
            daemon.round()
        assert answers == ["250 OK"]  # a retry is due a little later
        store = daemon.store
        assert store.message(1).state == "routed"  # type: ignore[union-attr]
        clock[0] += timedelta(seconds=1)
        daemon.run_once()
        assert len(received) == 1
        mail = message_from_bytes(received[0])
        attachment = next(p for p in mail.walk() if p.get_filename())
        assert attachment.get_payload(decode=True) == (SAMPLES / "dlg11-unmarked.xml").read_bytes()
        answers.append("550 5.1.1 no such user")
        daemon = Daemon(settings, clock=lambda: clock[0])
        _drop(tmp_path, "epi12-unmarked.xml")
        daemon.run_once()
        store = SqliteStore(tmp_path / "var" / "pfhjem-msg.sqlite3")
        assert store.message(1).state == "done"  # type: ignore[union-attr]
        assert store.message(2).state == "failed"  # type: ignore[union-attr]
        assert "550" in (store.message(2).state_reason or "")  # type: ignore[union-attr]
        store.close()
    finally:
        controller.stop()


def test_smtp_intake_stores_before_250_and_451_when_it_cannot(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from pfhjem_msg.intake.smtp import StoringHandler, start_server

    class BrokenStore:
        def accept(self, *a):  # type: ignore[no-untyped-def]
            raise OSError("disk full")

    store = SqliteStore(tmp_path / "s.sqlite3")
    results: dict[str, object] = {}

    async def scenario() -> None:
        pool = ThreadPoolExecutor(1)
        good = await start_server(
            StoringHandler(store, lambda: datetime.now(UTC), pool), "127.0.0.1", 0, 10_000_000
        )
        bad = await start_server(
            StoringHandler(BrokenStore(), lambda: datetime.now(UTC), pool), "127.0.0.1", 0, 10_000_000
        )  # type: ignore[arg-type]
        ports = [s.sockets[0].getsockname()[1] for s in (good, bad)]

        def client() -> None:
            data = (SAMPLES / "mime-attachment.eml").read_bytes()
            with smtplib.SMTP("127.0.0.1", ports[0]) as c:
                results["good"] = c.sendmail("hub@x", ["pfhjem@x"], data)
                results["count"] = store.counts()
            with smtplib.SMTP("127.0.0.1", ports[1]) as c:
                try:
                    c.sendmail("hub@x", ["pfhjem@x"], data)
                except smtplib.SMTPDataError as exc:
                    results["bad"] = exc.smtp_code

        await asyncio.get_running_loop().run_in_executor(None, client)
        good.close()
        bad.close()

    asyncio.run(scenario())
    store.close()
    assert results["good"] == {} and results["count"] == {"received": 1}
    assert results["bad"] == 451


def test_service_runs_takes_smtp_and_spool_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, smtp_intake_port=port)
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pfhjem_msg", "run", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
    try:
        deadline = time.time() + 20
        while b"daemon.started" not in log.read_bytes():
            assert time.time() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.05)
        with smtplib.SMTP("127.0.0.1", port) as c:
            c.sendmail("hub@x", ["pfhjem@x"], (SAMPLES / "mime-attachment.eml").read_bytes())
        _drop(tmp_path, "epi12-marked-msgdescr.xml")
        while len(list((tmp_path / "var" / "outbox").glob("apprec-*.xml"))) < 2:
            assert time.time() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    assert code == 0
    text = log.read_text()
    assert "daemon.stopped" in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(line.get("state") == "done" for line in lines)


def test_logs_never_carry_patient_data(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    rows = sample_table()
    _drop(tmp_path, *(r.file for r in rows))
    result = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                            capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr
    logs = result.stdout + result.stderr
    lines = logs.splitlines()
    assert len(lines) > len(rows)
    assert all(json.loads(line) for line in lines)
    assert not re.search(r"(?<!\d)\d{11}(?!\d)", logs), "a national-id-like number in the logs"
    forbidden = (
        [p.family for p in ms.PATIENTS] + [p.given for p in ms.PATIENTS] + [p.fnr for p in ms.PATIENTS]
    )
    forbidden += [
        "Behovskartlegging",
        "kreftkoordinator",
        "Pneumoni",
        "C34.1",
        "Allmennsen",
        ms.PATIENTS[0].birth,
    ]
    for word in forbidden:
        assert word not in logs, f"{word!r} leaked into the logs"
    store = _store(tmp_path)
    for i in range(1, len(rows) + 1):
        for e in store.events(i):
            for word in forbidden:
                assert word not in e.reason, (i, e.reason)
    store.close()


def test_run_once_exit_code_and_unreadable_store(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "var" / "pfhjem-msg.sqlite3").mkdir(parents=True)
    result = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                            capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert (
        result.returncode == 2
        and "cannot open the store" in result.stderr
        and "Traceback" not in result.stderr
    )


# An operator who copies the store into PostgreSQL, sets the url and reloads must be told to
# restart: a reload that took the url would leave the daemon writing the SQLite file while its
# settings (and the operator commands) name PostgreSQL. The real SIGHUP: test_service.py.
def test_a_reload_that_changes_the_store_url_keeps_the_running_store_and_says_so(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    config = write_config(tmp_path)
    daemon = Daemon(load(config))
    try:
        text = config.read_text(encoding="utf-8")
        config.write_text(
            text + '\n[store]\nurl = "postgresql://pfhjem@127.0.0.1:5432/pfhjem_msg"\n', encoding="utf-8"
        )
        with capture_logs() as logs:
            assert daemon.reload() is True
        assert daemon.settings.store_url is None, "the settings name a store the daemon does not write"
        [restart] = [x for x in logs if x["event"] == "daemon.reload_needs_restart"]
        assert restart["keys"] == ["store.url"]
    finally:
        daemon.close()
