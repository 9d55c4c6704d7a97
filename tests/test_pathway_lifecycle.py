"""The end of the pathway and death, through the daemon and the real SQLite store: a marked
message that ends the pathway closes the patient's open follow-ups, one that says the patient
has died cancels them; no reminder is ever sent about that patient, and no new plan is made.
``followups show`` names the message that closed a follow-up."""

from __future__ import annotations

import pytest

from tests.test_followups import SAMPLES, SEED, World, _followups, _message, world

__all__ = ["world"]

DEATH_MSGID = "5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0d01"


def test_death_cancels_follow_ups_and_no_reminder_ever_follows(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.drop("a.xml", (SAMPLES / SEED).read_text(encoding="utf-8"))
    world.run()
    assert [f["status"] for f in _followups(world, capsys)] == ["open", "open"]

    world.clock.at("2026-11-02")
    world.drop("b.xml", _message(DEATH_MSGID, "Pasienten døde hjemme 01.11.2026, med familien til stede."))
    world.run()
    assert _followups(world, capsys) == []
    closed = _followups(world, capsys, "--all")
    assert [(f["status"], f["closed_by"]) for f in closed] == [
        ("cancelled", "message 2"),
        ("cancelled", "message 2"),
    ]
    assert all("has died (message 2)" in str(f["note"]) for f in closed)

    code, out, _ = world.cli(capsys, "followups", "show", "1")
    assert code == 0 and f"closed by  message 2 (MsgId {DEATH_MSGID}" in out

    # A relapse message for the same patient, long after: no plan for a patient who has died.
    world.clock.at("2027-03-01")
    relapse = _message("5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0d02", "Residiv. Diagnosedato: 20.02.2027.")
    world.drop("c.xml", relapse)
    world.run()
    assert len(_followups(world, capsys, "--all")) == 2
    code, out, _ = world.cli(capsys, "messages", "show", "3")
    assert code == 0 and "no follow-up plan: message 2 said the patient has died" in out

    for day in ("2026-12-12", "2026-12-29", "2027-02-01", "2027-09-12", "2028-03-20"):
        world.clock.at(day)
        world.run()
    assert world.reminders() == []


def test_end_of_the_pathway_closes_the_reported_point_and_cancels_the_rest(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.drop("a.xml", (SAMPLES / SEED).read_text(encoding="utf-8"))
    world.run()
    world.clock.at("2027-10-01")
    ending = _message(
        "5f0c0001-6b1d-4c8e-9a2f-7d3e1b0a0e01",
        "Pasienten er avsluttet i Pakkeforløp hjem etter siste samhandlingspunkt.",
    )
    world.drop("b.xml", ending)
    world.run()
    closed = {f["point"]: f for f in _followups(world, capsys, "--all")}
    assert closed[3]["status"] == "done" and closed[2]["status"] == "cancelled"
    assert closed[2]["closed_by"] == "message 2" and "the pathway ended (message 2)" in str(closed[2]["note"])
    world.clock.at("2028-03-01")
    world.run()
    assert world.reminders() == []
