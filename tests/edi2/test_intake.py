"""Intake from the message service: list, fetch, store, (decide), AppRec once, mark read, and
exactly once across a crash between any two of those steps. The store side is a small
in-memory implementation of ``Edi2IntakeStore``; the service is the fake, which counts every
AppRec POST."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pfhjem_msg.edi2.answer import AppRecAnswer
from pfhjem_msg.edi2.intake import NO_APPREC, Edi2Intake, Edi2Record, _NoAppRec
from pfhjem_msg.retry import RetryPolicy
from pfhjem_msg.store.base import Accepted
from tests.edi2.conftest import OTHER_HER, OUR_HER, SENDER_HER, ClientKey, client_for
from tests.edi2_fake import FakeService

OK_DOC = b"<?xml version='1.0' encoding='UTF-8'?>\n<MsgHead>readable 1</MsgHead>\n"
BAD_DOC = b"<?xml version='1.0' encoding='UTF-8'?>\n<MsgHead>broken</MsgHead>\n"
APPREC_DOC = b"<?xml version='1.0' encoding='UTF-8'?>\n<AppRec>for something we sent</AppRec>\n"


class Crash(Exception):
    """The process dies here: nothing after it runs, only what the store holds survives."""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class MemoryStore:
    """``Edi2IntakeStore`` in memory, plus a stand-in for the daemon's decision."""

    def __init__(self) -> None:
        self.raw: dict[int, bytes] = {}
        self.by_hash: dict[str, int] = {}
        self.records: dict[str, Edi2Record] = {}
        self.decisions: dict[int, AppRecAnswer | _NoAppRec] = {}
        self.posted_ids: dict[str, str | None] = {}

    def edi2_accept(self, raw: bytes, service_id: str, receiver_her: int, is_apprec: bool,
                    now: datetime) -> Accepted:  # fmt: skip
        if service_id in self.records:
            return Accepted(self.records[service_id].message_id, False)
        digest = hashlib.sha256(raw).hexdigest()
        message_id = self.by_hash.get(digest)
        new = message_id is None
        if message_id is None:
            message_id = self.by_hash[digest] = len(self.raw) + 1
            self.raw[message_id] = raw
        answers = not any(r.message_id == message_id for r in self.records.values())
        self.records[service_id] = Edi2Record(service_id, message_id, receiver_her, is_apprec, answers)
        return Accepted(message_id, new)

    def edi2_record(self, service_id: str) -> Edi2Record | None:
        return self.records.get(service_id)

    def edi2_unsettled(self, limit: int) -> list[Edi2Record]:
        return [r for r in self.records.values() if not r.read and r.held is None][:limit]

    def edi2_answer(self, message_id: int) -> AppRecAnswer | _NoAppRec | None:
        return self.decisions.get(message_id)

    def edi2_apprec_intent(self, service_id: str, now: datetime) -> None:
        self.records[service_id] = replace(self.records[service_id], apprec="intent")

    def edi2_apprec_posted(self, service_id: str, apprec_service_id: str | None, now: datetime) -> None:
        self.records[service_id] = replace(self.records[service_id], apprec="posted")
        self.posted_ids[service_id] = apprec_service_id

    def edi2_read(self, service_id: str, now: datetime) -> None:
        self.records[service_id] = replace(self.records[service_id], read=True)

    def edi2_hold(self, service_id: str, reason: str, now: datetime) -> None:
        self.records[service_id] = replace(self.records[service_id], held=reason)

    def daemon(self) -> None:
        """What the pipeline decides: no AppRec for an AppRec, status 2 for a broken message."""
        for message_id, raw in self.raw.items():
            if message_id not in self.decisions:
                self.decisions[message_id] = (
                    NO_APPREC if b"<AppRec>" in raw
                    else AppRecAnswer("2", (("E10", "ugyldig"),)) if b"broken" in raw
                    else AppRecAnswer("1")
                )  # fmt: skip


def intake(fake: FakeService, key: ClientKey, store: MemoryStore, clock: Clock | None = None) -> Edi2Intake:
    return Edi2Intake(client_for(fake, key), store, clock or Clock(), RetryPolicy(jitter=0.0))


def full_round(i: Edi2Intake, store: MemoryStore) -> None:
    i.take_in()
    store.daemon()
    i.settle()


def three_messages(fake: FakeService) -> tuple[str, str, str]:
    return (
        fake.add_inbound(OK_DOC, OUR_HER, SENDER_HER),
        fake.add_inbound(BAD_DOC, OTHER_HER, SENDER_HER),
        fake.add_inbound(APPREC_DOC, OUR_HER, SENDER_HER, is_apprec=True),
    )


def test_messages_are_stored_answered_and_marked_read(fake: FakeService, client_key: ClientKey) -> None:
    ok, bad, receipt = three_messages(fake)
    store = MemoryStore()
    i = intake(fake, client_key, store)
    first = i.take_in()
    assert first.stored == 3 and {store.raw[r.message_id] for r in store.records.values()} == {
        OK_DOC, BAD_DOC, APPREC_DOC}  # fmt: skip
    waiting = i.settle()
    assert waiting.waiting == 2 and fake.apprec_posts == []  # not decided yet: nothing posted
    assert fake.reads == [(receipt, OUR_HER)]  # an AppRec needs no answer, only storing
    store.daemon()
    done = i.settle()
    assert done.apprecs_posted == 2 and done.marked_read == 2
    posts = {m: (her, body["appRecStatus"], body["appRecErrorList"]) for m, her, body in fake.apprec_posts}
    assert posts[ok] == (OUR_HER, "Ok", [])
    assert posts[bad][:2] == (OTHER_HER, "Rejected") and posts[bad][2][0]["errorCode"] == "E10"
    assert receipt not in posts
    assert sorted(fake.reads) == sorted([(ok, OUR_HER), (bad, OTHER_HER), (receipt, OUR_HER)])
    assert all(m.read for m in fake.inbound.values())
    assert fake.problems == []


def test_duplicate_deliveries_are_processed_once(fake: FakeService, client_key: ClientKey) -> None:
    fake.duplicate_listing = True
    ok = fake.add_inbound(OK_DOC, OUR_HER, SENDER_HER)
    store = MemoryStore()
    i = intake(fake, client_key, store)
    full_round(i, store)
    fake.redeliver(ok)  # the service hands it out again after it was read
    full_round(i, store)
    full_round(i, store)
    assert len(store.raw) == 1 and fake.posts_for(ok) == 1
    assert fake.calls.count("GetBusinessDocument") == 1
    assert fake.inbound[ok].read
    assert fake.problems == []


def test_same_document_twice_is_answered_once(fake: FakeService, client_key: ClientKey) -> None:
    """Two service messages with the same bytes: one message of ours, one AppRec, both read."""
    first = fake.add_inbound(OK_DOC, OUR_HER, SENDER_HER)
    second = fake.add_inbound(OK_DOC, OUR_HER, SENDER_HER)
    store = MemoryStore()
    full_round(intake(fake, client_key, store), store)
    assert len(store.raw) == 1
    assert fake.posts_for(first) + fake.posts_for(second) == 1
    assert fake.inbound[first].read and fake.inbound[second].read


def _arm(obj: Any, name: str, when: str) -> None:
    """Make ``obj.name`` die once, before or after doing its work."""
    original: Callable[..., Any] = getattr(obj, name)
    armed = [True]

    def dying(*args: Any, **kw: Any) -> Any:
        if armed[0] and when == "before":
            armed[0] = False
            raise Crash(name)
        result = original(*args, **kw)
        if armed[0] and when == "after":
            armed[0] = False
            raise Crash(name)
        return result

    setattr(obj, name, dying)


CRASH_POINTS = [
    ("client", "unread", "after"),  # listed, nothing fetched
    ("client", "business_document", "after"),  # fetched, not stored
    ("store", "edi2_accept", "after"),  # stored, nothing else
    ("store", "daemon", "after"),  # decided, nothing posted
    ("store", "edi2_apprec_intent", "after"),  # intent recorded, POST not made
    ("client", "post_apprec", "after"),  # POST made, its answer lost
    ("store", "edi2_apprec_posted", "after"),  # posted and recorded, not read
    ("client", "mark_read", "after"),  # read at the service, not recorded
    ("store", "edi2_read", "after"),  # all done, the round not finished
]


@pytest.mark.parametrize(
    ("side", "method", "when"), CRASH_POINTS, ids=[f"{m}-{w}" for _, m, w in CRASH_POINTS]
)
def test_crash_between_steps_posts_each_apprec_once(
    fake: FakeService, client_key: ClientKey, side: str, method: str, when: str
) -> None:
    ok, bad, receipt = three_messages(fake)
    store = MemoryStore()
    if side == "store":
        _arm(store, method, when)
    crashes = 0
    for restart in range(6):
        i = intake(fake, client_key, store)  # a new process: new client, new token, same store
        if side == "client" and restart == 0:
            _arm(i.client, method, when)
        try:
            full_round(i, store)
        except Crash:
            crashes += 1
            continue
        if all(r.read for r in store.records.values()) and len(store.records) == 3:
            break
    assert crashes == 1
    assert fake.posts_for(ok) == 1 and fake.posts_for(bad) == 1 and fake.posts_for(receipt) == 0
    assert fake.calls.count("PostAppRec") == 2  # not even a refused second attempt
    assert len(store.raw) == 3 and len(store.records) == 3
    assert all(m.read for m in fake.inbound.values())
    assert all(r.apprec == "posted" for r in store.records.values() if not r.is_apprec)
    assert fake.problems == []


def test_in_doubt_apprec_is_held_when_the_service_cannot_tell(
    fake: FakeService, client_key: ClientKey
) -> None:
    """After an interrupted POST the service is asked; if it refuses to answer, an operator
    decides: neither a second AppRec nor none at all is risked."""
    ok = fake.add_inbound(OK_DOC, OUR_HER, SENDER_HER)
    store = MemoryStore()
    first = intake(fake, client_key, store)
    _arm(first.client, "post_apprec", "after")
    with pytest.raises(Crash):
        full_round(first, store)
    fake.inject("GetApprecInfo", 400)
    result = intake(fake, client_key, store).settle()
    assert result.held == 1 and fake.posts_for(ok) == 1
    assert "requestId" in (store.records[ok].held or "") and not fake.inbound[ok].read
    full_round(intake(fake, client_key, store), store)
    assert fake.posts_for(ok) == 1 and fake.calls.count("GetBusinessDocument") == 1


def test_refused_apprec_holds_the_message_with_the_request_id(
    fake: FakeService, client_key: ClientKey
) -> None:
    ok = fake.add_inbound(OK_DOC, OUR_HER, SENDER_HER)
    fake.inject("PostAppRec", 400)
    store = MemoryStore()
    i = intake(fake, client_key, store)
    full_round(i, store)
    held = store.records[ok].held or ""
    assert "400" in held and "requestId" in held and "readable" not in held
    assert not fake.inbound[ok].read
    full_round(i, store)
    assert fake.calls.count("PostAppRec") == 1 and fake.calls.count("GetBusinessDocument") == 1


def test_refused_credentials_back_off_and_show_as_failing(fake: FakeService, client_key: ClientKey) -> None:
    fake.add_inbound(OK_DOC, OUR_HER, SENDER_HER)
    clock = Clock()
    store = MemoryStore()
    i = intake(fake, client_key, store, clock)
    fake.inject("GetMessages", 401, times=2)
    failed = i.round()
    assert failed.stored == 0 and i.health.auth_failing and i.health.retry_at is not None
    assert "renewal" in (i.health.last_error or "")
    calls = len(fake.calls)
    clock.now += timedelta(seconds=5)
    i.round()  # still backing off: the service is not asked
    assert len(fake.calls) == calls
    clock.now = i.health.retry_at + timedelta(seconds=1)
    store.daemon()
    i.round()
    assert not i.health.auth_failing and i.health.last_success is not None and len(store.raw) == 1


def test_server_errors_are_retried_by_the_policy(fake: FakeService, client_key: ClientKey) -> None:
    ok = fake.add_inbound(OK_DOC, OUR_HER, SENDER_HER)
    clock = Clock()
    store = MemoryStore()
    i = intake(fake, client_key, store, clock)
    fake.inject("GetBusinessDocument", 500)
    i.round()
    assert i.health.failures == 1 and not i.health.auth_failing and i.health.retry_at == clock.now + timedelta(
        seconds=30)  # fmt: skip
    fake.inject("MarkMessageAsRead", None, stall=1.5)
    clock.now += timedelta(seconds=31)
    store.daemon()
    i.round()  # stored, then no decision yet: waits
    store.daemon()
    clock.now += timedelta(seconds=1)
    i.round()  # AppRec posted, then the PUT times out
    assert i.health.failures == 1 and fake.posts_for(ok) == 1
    clock.now = (i.health.retry_at or clock.now) + timedelta(seconds=1)
    i.round()
    assert fake.inbound[ok].read and fake.posts_for(ok) == 1 and i.health.failures == 0


def test_refused_listing_shows_as_failing_with_the_request_id(
    fake: FakeService, client_key: ClientKey
) -> None:
    fake.inject("GetMessages", 400)
    i = intake(fake, client_key, MemoryStore())
    i.round()
    assert i.health.failures == 1 and not i.health.auth_failing
    assert "requestId" in (i.health.last_error or "") and i.health.retry_at is not None


def test_no_payload_in_logs_or_errors(
    fake: FakeService, client_key: ClientKey, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = b"<?xml version='1.0' encoding='UTF-8'?>\n<MsgHead>Kari Nordmann 01017012345 broken</MsgHead>\n"
    sid = fake.add_inbound(secret, OUR_HER, SENDER_HER)
    fake.inject("PostAppRec", 400)
    store = MemoryStore()
    i = intake(fake, client_key, store)
    i.take_in()
    store.daemon()
    result = i.settle()
    shown = capsys.readouterr()
    text = shown.out + shown.err + " ".join(result.errors) + (store.records[sid].held or "")
    assert sid in text and "Kari" not in text and "01017012345" not in text
