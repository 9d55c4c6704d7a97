"""The daemon on EDI 2.0, end to end: the fake message service (in this process, on 127.0.0.1)
holds messages for us, a real ``pfhjem-msg run --once`` subprocess takes them in, decides,
answers and forwards them through the service, and the fake checks every request against the
service's published description."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path

from lxml import etree

from pfhjem_msg.store.sqlite import SqliteStore
from tests.conftest import ROOT, SAMPLES, write_config
from tests.edi2.conftest import CLIENT_ID, ClientKey
from tests.edi2_fake import FakeService

US = 8300010
"""Fjordvik's case unit HER-id: the receiver the samples name."""
HOSPITAL = 9200001


def edi2_config(tmp_path: Path, fake: FakeService, key: ClientKey, extra: str = "") -> Path:
    return write_config(
        tmp_path,
        case_unit='transport = "edi2"',
        extra=f"""
[intake.edi2]
base_url = "{fake.base_url}"
her_ids = [{US}]
poll_seconds = 0.05
timeout_seconds = 5.0
[edi2.helseid]
token_url = "{fake.token_url}"
client_id = "{CLIENT_ID}"
scope = "nhn:msh/api"
private_key = "{key.path}"
{extra}""",
    )


def run_once(config: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                          capture_output=True, cwd=ROOT, timeout=120)  # fmt: skip


def test_run_once_answers_reads_and_forwards_through_the_service(
    tmp_path: Path, fake: FakeService, client_key: ClientKey
) -> None:
    config = edi2_config(tmp_path, fake, client_key)
    marked = fake.add_inbound((SAMPLES / "dlg11-marked-gp-role.xml").read_bytes(), US, HOSPITAL)
    unmarked = fake.add_inbound((SAMPLES / "dlg11-unmarked.xml").read_bytes(), US, HOSPITAL)
    epikrise = fake.add_inbound((SAMPLES / "epi12-marked-msgdescr.xml").read_bytes(), US, HOSPITAL)
    broken = fake.add_inbound((SAMPLES / "broken-not-well-formed.xml").read_bytes(), US, HOSPITAL)

    done = run_once(config)
    assert done.returncode == 0, done.stderr[-2000:]
    assert fake.problems == []

    posted = {m: (body["appRecStatus"], [e["errorCode"] for e in body["appRecErrorList"]])
              for m, her, body in fake.apprec_posts if her == US}  # fmt: skip
    assert posted == {marked: ("Ok", []), unmarked: ("Ok", []), epikrise: ("Ok", []),
                      broken: ("Rejected", ["T01"])}  # fmt: skip
    assert all(fake.posts_for(m) == 1 for m in posted)
    assert sorted(fake.reads) == sorted((m, US) for m in (marked, unmarked, epikrise, broken))
    assert not list((tmp_path / "var" / "outbox").glob("*.xml")), (
        "an EDI 2.0 message was answered into the outbox"
    )

    sent = list(fake.outbound.values())
    topics = [etree.fromstring(m.document).findtext(".//{*}Tema") for m in sent]
    receivers = sorted(tuple(m.receivers or ()) for m in sent)
    assert all(m.document.startswith(b"<?xml version='1.0' encoding='UTF-8'?>") for m in sent)
    assert all(t == "Pakkeforløp hjem for pasienter med kreft" for t in topics)
    # the marked Dialogmelding: its GP copy and the case-unit copy; the marked Epikrise: the case-unit
    # copy (and a GP copy if it names the GP); the unmarked Dialogmelding: the default destination,
    # which is the case unit
    to_case_unit = [r for r in receivers if r == (US,)]
    to_gp = [r for r in receivers if r != (US,)]
    assert len(to_case_unit) == 3 and to_gp, receivers

    store = SqliteStore(tmp_path / "var" / "pfhjem-msg.sqlite3")
    try:
        rows = [store.message(i) for i in range(1, 5)]
        assert {r.source.partition(":")[0] for r in rows if r} == {"edi2"}
        assert sorted(r.state for r in rows if r) == ["done", "done", "done", "rejected"]
        with_service_id = [d for i in range(1, 5) for d in store.delivery_info(i) if d.service_id]
        assert {d.service_id for d in with_service_id if d.kind != "apprec"} == set(fake.outbound)
        marked_id = next(i for i in range(1, 5) if store.edi2_links(i)[0].service_id == marked)
        assert store.followups_for_message(marked_id), "no follow-up planned for the marked SP1 message"
    finally:
        store.close()

    show = subprocess.run([sys.executable, "-m", "pfhjem_msg", "messages", "show", str(marked_id), "--config",
                           str(config)], capture_output=True, cwd=ROOT, text=True)  # fmt: skip
    assert (
        show.returncode == 0
        and f"service message {marked}" in show.stdout
        and "message service id" in show.stdout
    )
    assert base64.b64encode(b"Pakkeforl").decode() not in show.stdout


def test_receivers_apprec_is_read_back_into_the_receipt(
    tmp_path: Path, fake: FakeService, client_key: ClientKey
) -> None:
    config = edi2_config(tmp_path, fake, client_key)
    fake.add_inbound((SAMPLES / "dlg11-marked-gp-role.xml").read_bytes(), US, HOSPITAL)
    assert run_once(config).returncode == 0
    gp = next(m for m in fake.outbound.values() if m.receivers != [US])
    assert gp.receivers
    fake.answer_outbound(gp.id, gp.receivers[0], "Rejected", [{"errorCode": "E21", "details": ""}])
    assert run_once(config).returncode == 0
    store = SqliteStore(tmp_path / "var" / "pfhjem-msg.sqlite3")
    try:
        copy = next(d for d in store.delivery_info(1) if d.kind == "gp_copy")
        assert (copy.service_id, copy.receipt_status, copy.receipt_errors) == (gp.id, "2", "E21")
        row = store.message(1)
        assert row is not None and row.state == "held", "a rejected GP copy did not put its message on hold"
    finally:
        store.close()
    assert fake.problems == []


def test_refused_credentials_show_in_status(tmp_path: Path, fake: FakeService, client_key: ClientKey) -> None:
    config = edi2_config(tmp_path, fake, client_key)
    fake.add_inbound((SAMPLES / "dlg11-unmarked.xml").read_bytes(), US, HOSPITAL)
    fake.inject("GetMessages", 401, times=10)
    assert run_once(config).returncode == 0
    status = subprocess.run([sys.executable, "-m", "pfhjem_msg", "status", "--config", str(config)],
                            capture_output=True, cwd=ROOT, text=True)  # fmt: skip
    assert status.returncode == 1
    assert "EDI 2.0 intake failing since" in status.stdout and "credentials" in status.stdout
    assert fake.apprec_posts == [] and fake.reads == []


def test_send_via_edi2_answers_spool_messages_through_the_service(
    tmp_path: Path, fake: FakeService, client_key: ClientKey
) -> None:
    config = edi2_config(tmp_path, fake, client_key)
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[hub]\n", '[hub]\nsend_via = "edi2"\n'), encoding="utf-8")
    sample = (SAMPLES / "dlg11-marked-gp-role.xml").read_bytes()
    (tmp_path / "var" / "inbox" / "one.xml").write_bytes(sample)
    done = run_once(config)
    assert done.returncode == 0, done.stderr[-2000:]
    assert fake.problems == [] and fake.apprec_posts == [], (
        "a spool message's AppRec went to the apprec endpoint"
    )
    kinds = sorted(etree.QName(etree.fromstring(m.document)).localname for m in fake.outbound.values())
    assert kinds == ["AppRec", "MsgHead", "MsgHead"], kinds  # the AppRec, the GP copy, the case-unit copy
    assert not list((tmp_path / "var" / "outbox").glob("*.xml"))


def test_refused_credentials_hold_back_sending_until_they_work(
    tmp_path: Path, fake: FakeService, client_key: ClientKey
) -> None:
    config = edi2_config(tmp_path, fake, client_key, extra="[retry]\nbase_seconds = 1.0\njitter = 0.0\n")
    fake.add_inbound((SAMPLES / "dlg11-marked-gp-role.xml").read_bytes(), US, HOSPITAL)
    fake.inject("PostMessage", 403, times=1000)
    assert run_once(config).returncode == 0
    assert fake.outbound == {}
    store = SqliteStore(tmp_path / "var" / "pfhjem-msg.sqlite3")
    try:
        waiting = [d for d in store.delivery_info(1) if d.kind != "apprec"]
        assert waiting and all(
            d.status == "pending" and "refused our token" in (d.last_error or "") for d in waiting
        )
    finally:
        store.close()
    with fake.lock:
        fake.injections.clear()
    time.sleep(2.5)  # the retry policy's wait after the failed attempts
    assert run_once(config).returncode == 0
    assert len(fake.outbound) == 2 and fake.problems == []


def test_a_replay_of_an_edi2_message_goes_through_the_service_without_a_second_apprec(
    tmp_path: Path, fake: FakeService, client_key: ClientKey
) -> None:
    config = edi2_config(tmp_path, fake, client_key)
    fake.add_inbound((SAMPLES / "dlg11-marked-gp-role.xml").read_bytes(), US, HOSPITAL)
    assert run_once(config).returncode == 0
    sent_before, posts_before = len(fake.outbound), len(fake.apprec_posts)
    replay = subprocess.run([sys.executable, "-m", "pfhjem_msg", "messages", "replay", "1", "--force-duplicate",
                             "--reason", "the GP asked again", "--config", str(config)],
                            capture_output=True, cwd=ROOT, text=True)  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    assert run_once(config).returncode == 0
    assert len(fake.outbound) == sent_before + 2, (
        "the replay's GP copy and case-unit copy did not go through the service"
    )
    assert len(fake.apprec_posts) == posts_before == 1
    assert not list((tmp_path / "var" / "outbox").glob("*.xml")), (
        "the replay was answered into the hub outbox"
    )
    assert fake.problems == []


def test_edi2_configuration_problems_name_their_lines_and_show_hides_the_key(
    tmp_path: Path, fake: FakeService, client_key: ClientKey
) -> None:
    config = edi2_config(tmp_path, fake, client_key)
    shown = subprocess.run([sys.executable, "-m", "pfhjem_msg", "config", "show", "--config", str(config)],
                           capture_output=True, cwd=ROOT, text=True)  # fmt: skip
    assert shown.returncode == 0 and "[intake.edi2]" in shown.stdout
    assert str(client_key.path) not in shown.stdout and 'private_key = "********"' in shown.stdout
    text = config.read_text(encoding="utf-8")
    config.write_text(text[: text.index("[edi2.helseid]")], encoding="utf-8")
    check = subprocess.run([sys.executable, "-m", "pfhjem_msg", "config", "check", "--config", str(config)],
                           capture_output=True, cwd=ROOT, text=True)  # fmt: skip
    line = next(i for i, x in enumerate(text.splitlines(), 1) if x.strip() == "[intake.edi2]")
    assert check.returncode == 1
    assert f"config.toml:{line}: intake.edi2: needs [edi2.helseid]" in check.stdout + check.stderr
