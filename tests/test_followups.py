"""The follow-up plan with a fake clock moved across 18 months: planned once per episode,
reminded once per phase (also after downtime), closed by later messages or by hand,
exported as iCalendar, counted in status."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from pfhjem_msg import metrics
from pfhjem_msg.cli import main
from pfhjem_msg.config import load
from pfhjem_msg.daemon import Daemon
from pfhjem_msg.followups import Followup, due_phase, ics
from pfhjem_msg.kith.parse import Limits, parse_xml
from pfhjem_msg.kith.schemas import SchemaSet
from tests.conftest import SAMPLES, write_config

NATIONAL_ID = "14835841481"
SEED = "dlg11-marked-tema.xml"  # diagnosis date 12.09.2026: SP2 2026-12-12..2027-01-12, SP3 2027-09-12..2028-03-12
SEED_MSGID = "5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0001"


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def at(self, day: str) -> None:
        self.now = datetime.fromisoformat(day + "T09:00:00+00:00")


def _message(msg_id: str, text: str, *, fnr: str = NATIONAL_ID) -> str:
    data = (SAMPLES / SEED).read_text(encoding="utf-8").replace(SEED_MSGID, msg_id)
    data = data.replace("<p>Diagnosedato: 12.09.2026.</p>", f"<p>{text}</p>")
    return data.replace(NATIONAL_ID, fnr)


class World:
    """A configuration, a fake clock and the daemon's steps (a fresh daemon per step, as
    after a restart)."""

    def __init__(self, tmp: Path, extra: str = "") -> None:
        self.tmp = tmp
        self.config = write_config(tmp, extra=extra)
        self.clock = Clock(datetime(2026, 10, 6, 9, 0, tzinfo=UTC))
        self.case_unit = tmp / "var" / "case-units" / "fjordvik"

    def drop(self, name: str, text: str) -> None:
        (self.tmp / "var" / "inbox" / name).write_text(text, encoding="utf-8")

    def run(self) -> None:
        daemon = Daemon(load(self.config), clock=self.clock)
        daemon.run_once()

    def reminders(self) -> list[str]:
        return sorted(p.name for p in self.case_unit.glob("reminder-*"))

    def cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([*args, "--config", str(self.config)])
        out, err = capsys.readouterr()
        return code, out, err


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    w = World(tmp_path)
    monkeypatch.setattr("pfhjem_msg.cli_ops.now", w.clock)  # the operator's commands on the same clock
    return w


def _followups(world: World, capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict[str, object]]:
    code, out, _ = world.cli(capsys, "followups", "list", "--json", *extra)
    assert code == 0
    result: list[dict[str, object]] = json.loads(out)
    return result


def test_plan_reminders_across_eighteen_months(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.drop("a.xml", (SAMPLES / SEED).read_text(encoding="utf-8"))
    world.run()
    plan = _followups(world, capsys)
    assert [(f["point"], f["window_start"], f["window_end"], f["anchor_kind"]) for f in plan] == [
        (2, "2026-12-12", "2027-01-12", "diagnosis"),
        (3, "2027-09-12", "2028-03-12", "diagnosis"),
    ]
    assert world.reminders() == []

    world.clock.at("2026-12-11")
    world.run()
    assert world.reminders() == []
    world.clock.at("2026-12-12")  # SP2 opens
    world.run()
    world.run()  # a second sweep the same day sends nothing more
    assert world.reminders() == ["reminder-1-sp2-open.txt"]
    text = (world.case_unit / "reminder-1-sp2-open.txt").read_text(encoding="utf-8")
    assert "samhandlingspunkt 2" in text and "2026-12-12 – 2027-01-12" in text and SEED_MSGID in text
    assert NATIONAL_ID not in text and "Prøvestad" not in text
    assert [f["condition"] for f in _followups(world, capsys, "--due")] == ["due"]

    world.clock.at("2026-12-29")  # 14 days before SP2 closes, still open: the second reminder
    world.run()
    assert world.reminders() == ["reminder-1-sp2-closing.txt", "reminder-1-sp2-open.txt"]
    assert "lukkes 2027-01-12" in (world.case_unit / "reminder-1-sp2-closing.txt").read_text(encoding="utf-8")

    world.clock.at("2027-02-01")  # SP2 passed unrecorded: overdue, no third reminder
    world.run()
    assert len(world.reminders()) == 2
    assert [f["id"] for f in _followups(world, capsys, "--overdue")] == [1]

    # The daemon is down from February 2027 to January 2028: SP3 opened in September 2027.
    world.clock.at("2028-01-03")
    world.run()
    world.run()
    assert world.reminders()[-1] == "reminder-2-sp3-open.txt" and len(world.reminders()) == 3
    world.clock.at("2028-04-01")  # and again down until after SP3 closed: one overdue reminder
    world.run()
    world.run()
    assert world.reminders() == ["reminder-1-sp2-closing.txt", "reminder-1-sp2-open.txt",
                                 "reminder-2-sp3-open.txt", "reminder-2-sp3-overdue.txt"]  # fmt: skip

    code, out, _ = world.cli(capsys, "followups", "show", "2", "--json")
    shown = json.loads(out)
    assert code == 0 and [(r["kind"], r["phase"]) for r in shown["reminders"]] == [
        ("reminder", "open"),
        ("reminder", "overdue"),
    ]
    assert all(r["status"] == "delivered" for r in shown["reminders"]) and "patient" not in shown
    assert {r["destination"] for r in shown["reminders"]} == {f"dir:{world.case_unit}"}
    code, out, _ = world.cli(capsys, "messages", "show", "1", "--json")
    sent = [(d["followup_id"], d["phase"]) for d in json.loads(out)["deliveries"] if d["kind"] == "reminder"]
    assert code == 0 and sent == [(1, "open"), (1, "closing"), (2, "open"), (2, "overdue")]
    code, out, _ = world.cli(capsys, "messages", "show", "1")
    assert code == 0 and "(follow-up 2, overdue)" in out
    # A reminder's follow-up id is a column; as a metric label it is only its kind, «reminder».
    kinds = {s.labels["kind"] for m in metrics.REGISTRY.collect() for s in m.samples if "kind" in s.labels}
    assert "reminder" in kinds and kinds <= metrics.DELIVERY_KINDS | {"other"}


def test_a_replay_or_a_second_sp1_message_makes_no_second_plan_but_a_relapse_does(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.drop("a.xml", (SAMPLES / SEED).read_text(encoding="utf-8"))
    world.run()
    assert world.cli(capsys, "messages", "replay", "1", "--force-duplicate")[0] == 0
    world.run()
    update = _message(
        "5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0f01", "Oppdatert kartlegging. Diagnosedato: 14.09.2026."
    )
    world.drop("b.xml", update)
    world.run()
    assert len(_followups(world, capsys)) == 2
    _, out, _ = world.cli(capsys, "messages", "show", "3", "--json")
    assert any("same episode" in e["reason"] for e in json.loads(out)["events"])
    world.clock.at("2027-11-20")
    relapse = _message("5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0f02", "Residiv. Diagnosedato: 10.11.2027.")
    world.drop("c.xml", relapse)
    world.run()
    plan = _followups(world, capsys)
    assert [(f["point"], f["window_start"]) for f in plan] == [
        (2, "2026-12-12"),
        (3, "2027-09-12"),
        (2, "2028-02-10"),
        (3, "2028-11-10"),
    ]
    assert {f["episode"] for f in plan} == {1, 2}


def test_later_sp_messages_close_follow_ups_and_operators_close_by_hand(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.drop("a.xml", (SAMPLES / SEED).read_text(encoding="utf-8"))
    world.drop(
        "z.xml",
        _message("5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0f09", "Diagnosedato: 01.10.2026.", fnr="13116900216"),
    )
    world.run()
    assert len(_followups(world, capsys)) == 4
    world.clock.at("2026-12-20")
    world.drop("b.xml", _message("5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0f03",
                                 "Samhandlingspunkt 2 er gjennomført i kommunen."))  # fmt: skip
    world.run()
    closed = [f for f in _followups(world, capsys, "--all") if f["status"] == "done"]
    assert [(f["id"], f["closed_by"]) for f in closed] == [(1, "message 3")]
    code, _, err = world.cli(capsys, "followups", "done", "1", "--note", "samtale 18.12")
    assert code == 2 and "already done" in err
    code, out, _ = world.cli(capsys, "followups", "cancel", "3", "--reason", "flyttet", "--episode")
    assert code == 0 and "3, 4: cancelled" in out
    code, out, _ = world.cli(capsys, "followups", "done", "2", "--note", "samtale gjennomført")
    assert code == 0
    assert _followups(world, capsys) == []
    world.clock.at("2028-01-01")
    world.run()
    assert world.reminders() == []  # nothing open: nothing reminded
    code, out, _ = world.cli(capsys, "audit", "--json")
    assert [e["action"] for e in json.loads(out)] == ["follow-up 3 cancelled", "follow-up 4 cancelled",
                                                       "follow-up 2 done"]  # fmt: skip
    code, _, err = world.cli(capsys, "followups", "show", "99")
    assert code == 2 and "there is no follow-up '99'" in err


def test_ics_export_is_rfc5545_without_patient_data(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.drop("a.xml", (SAMPLES / SEED).read_text(encoding="utf-8"))
    world.run()
    target = world.tmp / "followups.ics"
    code, out, _ = world.cli(capsys, "followups", "export", "--ics", str(target))
    assert code == 0 and "2 open follow-up window(s)" in out
    raw = target.read_bytes()
    assert raw.startswith(b"BEGIN:VCALENDAR\r\n") and raw.endswith(b"END:VCALENDAR\r\n")
    lines = raw.split(b"\r\n")[:-1]
    assert all(len(line) <= 75 for line in lines) and b"\n" not in b"".join(lines)
    unfolded = raw.decode("utf-8").replace("\r\n ", "")
    assert unfolded.count("BEGIN:VEVENT") == 2 and "VERSION:2.0" in unfolded and "PRODID:" in unfolded
    assert "DTSTART;VALUE=DATE:20261212" in unfolded and "DTEND;VALUE=DATE:20270113" in unfolded
    assert "UID:followup-1-sp2@pfhjem-msg" in unfolded and "Tildelingskontoret" in unfolded
    assert NATIONAL_ID not in unfolded and "Prøvestad" not in unfolded and "Solveig" not in unfolded
    assert re.search(r"DTSTAMP:\d{8}T\d{6}Z", unfolded)
    code, out, _ = world.cli(capsys, "followups", "list", "--show-patient")
    assert NATIONAL_ID in out
    code, out, _ = world.cli(capsys, "audit", "--json")
    assert json.loads(out)[-1]["action"] == "show patient"


def _events(path: Path) -> dict[str, dict[str, str]]:
    """UID → the event's properties, from an unfolded iCalendar file."""
    text = path.read_bytes().decode("utf-8").replace("\r\n ", "")
    events = {}
    for block in text.split("BEGIN:VEVENT\r\n")[1:]:
        props = dict(line.split(":", 1) for line in block.split("END:VEVENT")[0].split("\r\n") if line)
        events[props["UID"]] = props
    return events


def test_ics_keeps_done_and_cancelled_windows_as_cancelled_with_the_same_uid(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.drop("a.xml", (SAMPLES / SEED).read_text(encoding="utf-8"))
    world.run()
    before, after = world.tmp / "before.ics", world.tmp / "after.ics"
    code, _, _ = world.cli(capsys, "followups", "export", "--ics", str(before), "--municipality", "fjordvik")
    assert code == 0
    code, _, _ = world.cli(capsys, "followups", "done", "1", "--note", "samtale med Solveig 14.01")
    assert code == 0
    world.clock.at("2026-10-07")
    code, out, _ = world.cli(capsys, "followups", "export", "--ics", str(after))
    assert code == 0 and "1 open follow-up window(s), 1 closed" in out
    old, new = _events(before), _events(after)
    assert set(old) == set(new) == {"followup-1-sp2@pfhjem-msg", "followup-2-sp3@pfhjem-msg"}
    sp2, sp3 = new["followup-1-sp2@pfhjem-msg"], new["followup-2-sp3@pfhjem-msg"]
    assert {k: old["followup-1-sp2@pfhjem-msg"][k] for k in ("STATUS", "SEQUENCE")} == {"STATUS": "CONFIRMED",
                                                                                         "SEQUENCE": "0"}  # fmt: skip
    # RFC 5545 3.8.7.4: a calendar takes the copy with the higher SEQUENCE (then the later DTSTAMP)
    assert sp2["STATUS"] == "CANCELLED" and int(sp2["SEQUENCE"]) > int(
        old["followup-1-sp2@pfhjem-msg"]["SEQUENCE"]
    )
    assert sp2["DTSTAMP"] > old["followup-1-sp2@pfhjem-msg"]["DTSTAMP"]
    assert sp2["DTSTART;VALUE=DATE"] == old["followup-1-sp2@pfhjem-msg"]["DTSTART;VALUE=DATE"]
    assert sp3["STATUS"] == "CONFIRMED" and sp3["SEQUENCE"] == "0"
    raw = after.read_text(encoding="utf-8")
    assert "Solveig" not in raw and "samtale" not in raw and NATIONAL_ID not in raw


def test_status_and_metrics_count_follow_ups_per_municipality(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.drop("a.xml", (SAMPLES / SEED).read_text(encoding="utf-8"))
    world.run()
    _, out, _ = world.cli(capsys, "status", "--json")
    assert json.loads(out)["followups"]["Fjordvik kommune"]["open"] == 2
    from pfhjem_msg import metrics

    daemon = Daemon(load(world.config), clock=lambda: datetime(2026, 12, 20, 9, tzinfo=UTC))
    daemon.refresh_metrics()
    assert metrics.followups.labels("Fjordvik kommune", "due")._value.get() == 1
    assert metrics.followups.labels("Fjordvik kommune", "open")._value.get() == 1
    daemon.pipeline.close()
    daemon.store.close()


def test_reminder_by_hub_is_a_valid_dialogmelding(tmp_path: Path, official_schemas: SchemaSet) -> None:
    extra = 'kreftkoordinator = { her_id = "8300020", name = "Kreftkoordinator", transport = "hub" }'
    world = World(tmp_path)
    text = world.config.read_text(encoding="utf-8")
    world.config.write_text(
        text.replace('path = "var/case-units/fjordvik" }', 'path = "var/case-units/fjordvik" }\n' + extra, 1)
    )
    world.drop("a.xml", (SAMPLES / SEED).read_text(encoding="utf-8"))
    world.run()
    world.clock.at("2026-12-12")
    world.run()
    (reminder,) = (tmp_path / "var" / "outbox").glob("reminder-1-sp2-open-*.xml")
    doc = parse_xml(reminder.read_bytes(), Limits()).document
    assert doc is not None and official_schemas.validate(doc) == []
    root = doc.getroot() if hasattr(doc, "getroot") else doc
    ns = {"m": "http://www.kith.no/xmlstds/msghead/2006-05-24"}
    receiver = root.find("m:MsgInfo/m:Receiver/m:Organisation/m:Organisation/m:Ident/m:Id", ns)
    assert receiver is not None and receiver.text == "8300020"
    assert root.findtext("m:MsgInfo/m:Patient/m:Ident/m:Id", namespaces=ns) == NATIONAL_ID
    # the README's promise: the Patient element carries the patient, the note text does not
    assert root.findtext("m:MsgInfo/m:Patient/m:FamilyName", namespaces=ns) == "Prøvestad"
    note = root.findtext(".//{*}TekstNotatInnhold") or ""
    assert "samhandlingspunkt 2" in note and NATIONAL_ID not in note and "Prøvestad" not in note


def _followup(**kw: object) -> Followup:
    base: dict[str, object] = dict(
        id=1, episode_id=1, municipality="M", point=2, window_start=date(2027, 1, 10), window_end=date(2027, 2, 10),
        anchor=date(2026, 10, 10), anchor_kind="diagnosis", status="open", source_message_id=1, source_msg_id="X",
        received_at=datetime(2026, 10, 11, tzinfo=UTC), opened_reminder_at=None, closing_reminder_at=None,
        closed_at=None, closed_by=None, note=None,
    )  # fmt: skip
    base.update(kw)
    return Followup(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("today", "sent", "expected"),
    [
        ("2027-01-09", {}, None),
        ("2027-01-10", {}, "open"),
        ("2027-01-27", {}, "closing"),
        ("2027-01-27", {"opened_reminder_at": datetime(2027, 1, 10, tzinfo=UTC)}, "closing"),
        ("2027-02-11", {}, "overdue"),
        ("2027-02-11", {"closing_reminder_at": datetime(2027, 1, 27, tzinfo=UTC)}, None),
        ("2027-01-20", {"opened_reminder_at": datetime(2027, 1, 10, tzinfo=UTC)}, None),
        ("2027-01-20", {"status": "done"}, None),
    ],
)
def test_due_phase(today: str, sent: dict[str, object], expected: str | None) -> None:
    assert due_phase(_followup(**sent), date.fromisoformat(today), 14) == expected


def test_ics_folds_long_lines_on_character_boundaries() -> None:
    f = _followup(municipality="Æøå" * 40)
    text = ics([f], datetime(2027, 1, 1, tzinfo=UTC), {f.municipality: "Tjenestekontoret for " + "æøå" * 30})
    for line in text.encode("utf-8").split(b"\r\n")[:-1]:
        assert len(line) <= 75
        line.decode("utf-8")  # never split inside a character
    assert "æøå" * 30 in text.replace("\r\n ", "")


def test_reminders_go_for_a_held_message_and_end_with_a_discarded_one(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = world.case_unit
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a directory")  # the case-unit copy fails: the message is failed, its plan stands
    world.drop("a.xml", (SAMPLES / SEED).read_text(encoding="utf-8"))
    world.drop(
        "b.xml",
        _message("5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0f07", "Diagnosedato: 01.10.2026.", fnr="13116900216"),
    )
    world.run()
    assert [f["message_id"] for f in _followups(world, capsys)] == [1, 2, 1, 2]
    assert world.cli(capsys, "messages", "discard", "2", "--reason", "wrong patient", "--yes")[0] == 0
    assert [f["message_id"] for f in _followups(world, capsys)] == [1, 1]
    blocker.unlink()
    assert world.cli(capsys, "messages", "replay", "1")[0] == 0
    world.run()
    assert world.cli(capsys, "messages", "hold", "1", "--reason", "x")[0] == 2  # done: nothing to hold
    store_path = world.tmp / "var" / "pfhjem-msg.sqlite3"
    import sqlite3

    con = sqlite3.connect(store_path)
    con.execute("UPDATE messages SET state = 'held', state_reason = 'the GP copy was rejected' WHERE id = 1")
    con.commit()
    con.close()
    world.clock.at("2026-12-12")
    world.run()
    assert world.reminders() == ["reminder-1-sp2-open.txt"]


def test_reminder_by_smtp_reaches_a_real_server_as_a_plain_mail(tmp_path: Path) -> None:
    from email import message_from_bytes, policy

    from aiosmtpd.controller import Controller

    from tests.conftest import free_port

    received: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            received.append(envelope.original_content or envelope.content)
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        world = World(tmp_path, extra=f'[smtp]\nhost = "127.0.0.1"\nport = {port}\n')
        coordinator = 'kreftkoordinator = { name = "Kreftkoordinator", transport = "smtp", address = "kreft@fjordvik.example" }'
        text = world.config.read_text(encoding="utf-8")
        world.config.write_text(
            text.replace(
                'path = "var/case-units/fjordvik" }', 'path = "var/case-units/fjordvik" }\n' + coordinator, 1
            )
        )
        world.drop("a.xml", (SAMPLES / SEED).read_text(encoding="utf-8"))
        world.run()
        world.clock.at("2026-12-12")
        world.run()
    finally:
        controller.stop()
    (mail_bytes,) = received
    mail = message_from_bytes(mail_bytes, policy=policy.default)
    assert mail["To"] == "kreft@fjordvik.example"
    assert mail["Subject"] == "Pakkeforløp hjem: påminnelse (open), oppfølging 1"
    body = mail.get_content()
    assert "samhandlingspunkt 2" in body and SEED_MSGID in body and NATIONAL_ID not in body


def test_ics_export_to_stdout_or_an_unwritable_path(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    world.drop("a.xml", (SAMPLES / SEED).read_text(encoding="utf-8"))
    world.run()
    code, out, err = world.cli(capsys, "followups", "export", "--ics", "-")
    assert code == 0 and out.startswith("BEGIN:VCALENDAR") and out.count("BEGIN:VEVENT") == 2
    assert "2 open follow-up window(s)" in err and not (world.tmp / "-").exists()
    missing = world.tmp / "no-such-dir" / "oppfolging.ics"
    code, out, err = world.cli(capsys, "followups", "export", "--ics", str(missing))
    assert code == 2 and "Traceback" not in err
    assert f"cannot write the calendar to {missing}: No such file or directory" in err
    assert "give --ics a file in a directory that exists" in err and not missing.parent.exists()
    # a re-export replaces the file whole and leaves no temporary file beside it
    target = world.tmp / "oppfolging.ics"
    for _ in range(2):
        code, _, _ = world.cli(capsys, "followups", "export", "--ics", str(target))
        assert code == 0
    assert target.read_bytes().startswith(b"BEGIN:VCALENDAR")
    assert sorted(p.name for p in world.tmp.glob("*oppfolging*")) == ["oppfolging.ics"]
