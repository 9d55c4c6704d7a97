"""Intake from the message service, exactly once across crashes.

The protocol, per service message (each step is durable before the next begins):

1. **List** the unread messages for our HER-ids. Listing changes nothing.
2. **Fetch** the business document of each one not known yet (known: its service id is in
   the store). Fetching changes nothing either.
3. **Store** the bytes, the service id, the receiving HER-id and ``isAppRec`` in one durable
   transaction (``edi2_accept``). The service id is the key: after a crash the service lists
   the message again, it is found known, and it is neither fetched nor stored a second time.
   Two service messages with the same bytes become one message of ours; only the first one
   linked to it ``answers`` (carries its AppRec), as KITH asks one AppRec per message.
4. **Decide**: the daemon processes the stored message as any other (an incoming AppRec is
   matched to what we sent). ``edi2_answer`` says what was decided: not yet (None), no AppRec
   due (``NO_APPREC``), or the ``AppRecAnswer`` to post.
5. **Post the AppRec**, once. The intent is recorded first (``edi2_apprec_intent``), then the
   POST, then the service's id of the AppRec (``edi2_apprec_posted``). On a later round a
   message whose intent is recorded but not its posting was interrupted in or around the POST,
   and we cannot know whether the service received it: the service is asked (``GET
   /Messages/{id}/apprec``, which lists the AppRec each receiver gave for the message, so ours
   under our receiving HER-id). If it lists ours, only the marker is recorded; if it lists
   none, the POST is made; if it cannot tell (it refuses the question), the message is held
   for an operator rather than risk a second AppRec or none. The description offers no
   idempotency key for the POST, so asking is the only way to close that window.
6. **Mark read** (``PUT /Messages/{id}/read/{herId}``), then record it (``edi2_read``). Marking
   read twice is harmless, so a crash between the two only repeats the PUT; a message the
   service lists again after we marked it read is marked read again, nothing more.

A message the service refuses to act on (400, or 404 for an id it no longer knows) is held
with the service's ``requestId`` and error text (``edi2_hold``); it stays unread there and
known here, so it is neither fetched again nor answered until an operator releases it.
Refused credentials (401/403 after one renewal), transient failures (5xx, timeouts) and a
refused listing (400: a HER-id the service does not accept) end the round: nothing half-done
is lost, and the next round starts again from step 1 after the retry policy's delay. ``health`` tells ``status`` whether intake is failing and why.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal, Protocol

from pfhjem_msg.edi2.answer import AppRecAnswer
from pfhjem_msg.edi2.client import Edi2Client, Edi2RequestRejected, ServiceMessage
from pfhjem_msg.edi2.helseid import Edi2AuthError
from pfhjem_msg.errors import PermanentDeliveryError, TransientDeliveryError
from pfhjem_msg.logs import get_logger
from pfhjem_msg.retry import RetryPolicy
from pfhjem_msg.store.base import Accepted

log = get_logger("pfhjem_msg.edi2.intake")
AppRecState = Literal["none", "intent", "posted"]


class _NoAppRec:
    def __repr__(self) -> str:
        return "NO_APPREC"


NO_APPREC: Final = _NoAppRec()
"""The daemon decided and no AppRec is due (an AppRec, a duplicate, no sender to answer)."""


@dataclass(frozen=True)
class Edi2Record:
    """What the store keeps about one service message."""

    service_id: str
    message_id: int
    receiver_her: int
    """Our HER-id it was sent to: the AppRec's sender and the HER-id it is marked read for."""
    is_apprec: bool
    answers: bool
    """This service message carries our AppRec for the message (the first one linked to it)."""
    apprec: AppRecState = "none"
    read: bool = False
    held: str | None = None
    """Why an operator must look at it (the service's requestId and error), or None."""


class Edi2IntakeStore(Protocol):
    """What intake needs from the store, beyond the message store itself."""

    def edi2_accept(self, raw: bytes, service_id: str, receiver_her: int, is_apprec: bool,
                    now: datetime) -> Accepted:  # fmt: skip
        """``accept(raw, f"edi2:{service_id}", now)`` and the link from the service id to our
        message, in one durable transaction. Known service id: the existing link, not new."""

    def edi2_record(self, service_id: str) -> Edi2Record | None: ...

    def edi2_unsettled(self, limit: int) -> list[Edi2Record]:
        """Records not yet marked read and not held, oldest first."""

    def edi2_answer(self, message_id: int) -> AppRecAnswer | _NoAppRec | None:
        """What the daemon decided about the message's AppRec; None while it has not decided."""

    def edi2_apprec_intent(self, service_id: str, now: datetime) -> None: ...

    def edi2_apprec_posted(self, service_id: str, apprec_service_id: str | None, now: datetime) -> str | None:
        """The AppRec is at the service (``apprec_service_id``: its id there, when known).
        Returns the message's final state when this finished it (its last delivery), else None."""

    def edi2_read(self, service_id: str, now: datetime) -> None: ...

    def edi2_hold(self, service_id: str, reason: str, now: datetime) -> None: ...


@dataclass
class Edi2Health:
    """For ``status``: whether intake from the service works, and if not, why and until when."""

    last_success: datetime | None = None
    failing_since: datetime | None = None
    last_error: str | None = None
    auth_failing: bool = False
    failures: int = 0
    retry_at: datetime | None = None


@dataclass
class RoundResult:
    stored: int = 0
    duplicates: int = 0
    apprecs_posted: int = 0
    marked_read: int = 0
    held: int = 0
    waiting: int = 0
    """Stored and not decided yet."""
    finished: list[tuple[int, str]] = field(default_factory=list)
    """(message id, final state) of messages that posting their AppRec finished."""
    errors: list[str] = field(default_factory=list)


class Edi2Intake:
    def __init__(self, client: Edi2Client, store: Edi2IntakeStore, clock: Callable[[], datetime],
                 policy: RetryPolicy | None = None, rng: random.Random | None = None) -> None:  # fmt: skip
        self.client = client
        self.store = store
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not security)
        self.health = Edi2Health()

    def round(self, limit: int = 500) -> RoundResult:
        """Take in what is unread, then answer and mark read what the daemon has decided.
        Skipped while backing off after a failure."""
        result = RoundResult()
        now = self.clock()
        if self.health.retry_at is not None and now < self.health.retry_at:
            return result
        try:
            self.take_in(result)
            self.settle(result, limit)
        except (Edi2AuthError, TransientDeliveryError, Edi2RequestRejected) as exc:
            self._failed(exc, result)
        else:
            self.health = Edi2Health(last_success=self.clock())
        return result

    def take_in(self, result: RoundResult | None = None) -> RoundResult:
        """Steps 1 to 3: list, fetch what is new, store it."""
        result = result or RoundResult()
        seen: set[str] = set()
        for listed in self.client.unread():
            if listed.id in seen:
                result.duplicates += 1
                continue
            seen.add(listed.id)
            known = self.store.edi2_record(listed.id)
            if known is not None:
                result.duplicates += 1
                if known.read:
                    self._read_again(known)
                continue
            self._store(listed, result)
        return result

    def _store(self, listed: ServiceMessage, result: RoundResult) -> None:
        try:
            raw = self.client.business_document(listed.id)
        except Edi2RequestRejected as exc:
            log.error("edi2.fetch_refused", service_id=listed.id, receiver_her=listed.receiver_her,
                      status=exc.status, request_id=exc.request_id)  # fmt: skip
            result.errors.append(str(exc))
            return
        accepted = self.store.edi2_accept(raw, listed.id, listed.receiver_her, listed.is_apprec, self.clock())
        result.stored += 1
        log.info("message.received", message_id=accepted.message_id, source="edi2", service_id=listed.id,
                 receiver_her=listed.receiver_her, sender_her=listed.sender_her, new=accepted.new)  # fmt: skip

    def _read_again(self, rec: Edi2Record) -> None:
        """The service lists a message we have marked read (it delivered it again): mark it
        read again, or it would come back in every listing and crowd out new messages."""
        try:
            self.client.mark_read(rec.service_id, rec.receiver_her)
        except Edi2RequestRejected as exc:
            log.warning("edi2.read_again_refused", message_id=rec.message_id, service_id=rec.service_id,
                        status=exc.status, request_id=exc.request_id)  # fmt: skip

    def settle(self, result: RoundResult | None = None, limit: int = 500) -> RoundResult:
        """Steps 5 and 6 for every stored message the daemon has decided about."""
        result = result or RoundResult()
        for rec in self.store.edi2_unsettled(limit):
            try:
                if not self._answered(rec, result):
                    result.waiting += 1
                    continue
                self.client.mark_read(rec.service_id, rec.receiver_her)
            except Edi2RequestRejected as exc:
                self._hold(rec, exc, result)
                continue
            self.store.edi2_read(rec.service_id, self.clock())
            result.marked_read += 1
        return result

    def _answered(self, rec: Edi2Record, result: RoundResult) -> bool:
        """Whether the message may be marked read: its AppRec is posted, or none is owed."""
        if rec.is_apprec or not rec.answers or rec.apprec == "posted":
            return True
        answer = self.store.edi2_answer(rec.message_id)
        if answer is None:
            return False
        if not isinstance(answer, AppRecAnswer):
            return True
        if rec.apprec == "intent" and self._posted_before(rec):
            self._finished(rec, self.store.edi2_apprec_posted(rec.service_id, None, self.clock()), result)
            log.info("edi2.apprec_found_posted", message_id=rec.message_id, service_id=rec.service_id)
            return True
        self.store.edi2_apprec_intent(rec.service_id, self.clock())
        apprec_id = self.client.post_apprec(rec.service_id, rec.receiver_her, answer)
        self._finished(rec, self.store.edi2_apprec_posted(rec.service_id, apprec_id, self.clock()), result)
        result.apprecs_posted += 1
        log.info("edi2.apprec_posted", message_id=rec.message_id, service_id=rec.service_id,
                 status=answer.status, errors=" ".join(c for c, _ in answer.errors))  # fmt: skip
        return True

    @staticmethod
    def _finished(rec: Edi2Record, state: str | None, result: RoundResult) -> None:
        if state is not None:
            result.finished.append((rec.message_id, state))

    def _posted_before(self, rec: Edi2Record) -> bool:
        """After an interrupted POST: does the service have our AppRec for this message?"""
        try:
            states = self.client.apprecs(rec.service_id)
        except Edi2RequestRejected as exc:
            raise Edi2RequestRejected(
                f"the question whether our AppRec for service message {rec.service_id} arrived before a "
                "restart; check at the service, post it by hand if it is missing, then release the message",
                exc.status, exc.request_id, exc.error,
            ) from exc  # fmt: skip
        return any(s.receiver_her == rec.receiver_her and s.apprec_status is not None for s in states)

    def _hold(self, rec: Edi2Record, exc: PermanentDeliveryError, result: RoundResult) -> None:
        self.store.edi2_hold(rec.service_id, str(exc), self.clock())
        result.held += 1
        result.errors.append(str(exc))
        request_id = exc.request_id if isinstance(exc, Edi2RequestRejected) else None
        log.error("edi2.held", message_id=rec.message_id, service_id=rec.service_id, request_id=request_id)

    def _failed(self, exc: Edi2AuthError | PermanentDeliveryError | TransientDeliveryError,
                result: RoundResult) -> None:  # fmt: skip
        now = self.clock()
        h = self.health
        h.failures += 1
        h.failing_since = h.failing_since or now
        h.last_error = str(exc)[:300]
        h.auth_failing = isinstance(exc, Edi2AuthError)
        h.retry_at = now + self.policy.delay(h.failures, self.rng)
        result.errors.append(h.last_error)
        log.warning("edi2.round_failed", auth=h.auth_failing, failures=h.failures,
                    retry_at=h.retry_at.isoformat())  # fmt: skip
