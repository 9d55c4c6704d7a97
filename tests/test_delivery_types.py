"""Deliveries in typed columns: the kinds and transports listed once, a reminder naming its
follow-up and phase, and the rules that choose what is sent agreeing in Python and SQL."""

from __future__ import annotations

import sqlite3
from itertools import product

import pytest

from pfhjem_msg import lifecycle as lc
from pfhjem_msg import metrics
from pfhjem_msg.config import Destination
from pfhjem_msg.pipeline import _subject
from pfhjem_msg.store.base import DeliveryRow, DeliverySpec


def test_may_send_sql_agrees_with_may_send_for_every_state_and_kind() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (state TEXT, kind TEXT)")
    pairs = list(product(lc.ALL_STATES, lc.DELIVERY_KINDS))
    db.executemany("INSERT INTO t VALUES (?, ?)", pairs)
    sent = set(db.execute(f"SELECT state, kind FROM t WHERE {lc.may_send_sql('state', 'kind')}").fetchall())
    assert sent == {(s, k) for s, k in pairs if lc.may_send(s, k)}
    assert ("held", "reminder") in sent and ("held", "case_unit") not in sent  # not trivially all or none


def test_a_reminder_names_its_follow_up_and_phase_and_nothing_else_does() -> None:
    spec = DeliverySpec("reminder", "dir", "r.txt", b"x", target="/srv/out", followup_id=3, phase="open")
    assert spec.slot == ("reminder", 3, "open") and spec.destination == "dir:/srv/out"
    with pytest.raises(ValueError, match="a reminder needs both"):
        DeliverySpec("reminder", "hub", "r.xml", b"x", followup_id=3)
    with pytest.raises(ValueError, match="any other kind neither"):
        DeliverySpec("apprec", "hub", "a.xml", b"x", followup_id=3, phase="open")
    with pytest.raises(ValueError, match="not a delivery kind"):  # the old string form is refused
        DeliverySpec("followup:3:open", "hub", "r.xml", b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a transport"):
        DeliverySpec("case_unit", "dir:/srv/cases", "c.xml", b"x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("transport", "target", "shown"),
    [("dir", "/var/out", "dir:/var/out"), ("smtp", "x@y.example", "smtp:x@y.example"), ("hub", None, "hub"),
     ("edi2", None, "edi2"), ("edi2_apprec", None, "edi2 (AppRec to its service message)")],
)  # fmt: skip
def test_destination_is_shown_from_the_columns(
    transport: lc.Transport, target: str | None, shown: str
) -> None:
    assert lc.describe_destination(transport, target) == shown


def test_a_configured_destination_gives_its_columns() -> None:
    from pathlib import Path

    d = Destination("Tildeling", None, "dir", path=Path("/srv/cases"))
    assert (d.transport, d.target) == ("dir", "/srv/cases")
    mail = Destination("Kreft", None, "smtp", address="kreft@k.example")
    assert (mail.target, lc.describe_destination(mail.transport, mail.target)) == (
        "kreft@k.example",
        "smtp:kreft@k.example",
    )
    assert Destination("Hub", "8300010", "hub").target is None


def test_a_reminders_mail_subject_has_ids_only() -> None:
    row = DeliveryRow(1, 7, "reminder", "smtp", "k@k.example", "reminder-3-sp2-open.txt", b"", None, None,
                      "pending", 0, None, followup_id=3, phase="closing")  # fmt: skip
    assert _subject(row) == "Pakkeforløp hjem: påminnelse (closing), oppfølging 3"


def test_metric_labels_come_from_the_closed_sets() -> None:
    assert {metrics.kind_label(k) for k in lc.DELIVERY_KINDS} == set(lc.DELIVERY_KINDS)
    assert metrics.kind_label("followup:3:open") == "other"
    assert (
        metrics.transport_label("edi2_apprec") == "edi2_apprec" and metrics.transport_label("ftp") == "other"
    )


def test_daemon_moves_follow_the_table() -> None:
    assert lc.illegal_daemon_move("received", ["parsed", "classified", "routed"]) is None
    assert lc.illegal_daemon_move("routed", ["delivered", "rejected"]) is None  # a negative AppRec sent
    assert lc.illegal_daemon_move("received", ["parsed", "delivered"]) == ("parsed", "delivered")
    assert lc.illegal_daemon_move("done", ["routed"]) == ("done", "routed")
    assert lc.illegal_daemon_move("discarded", ["failed"]) == ("discarded", "failed")
