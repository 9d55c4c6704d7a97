"""The message service's REST API (version 2), synchronously over httpx: the daemon's rounds
run on threads, and one call at a time per round is all the service needs from us.

Every call carries ``api-version``, ``nhn-source-system`` and the access token (with a fresh
DPoP proof naming the method, the URL and the token's hash). How answers map onto our errors:

- 401 or 403: the token is renewed once and the call made again; a second refusal raises
  ``Edi2AuthError`` (an operator must fix the registration; the loop backs off). A 401 that
  asks for a DPoP nonce is answered with the nonce first and does not count as a refusal.
- 5xx, 408, 429, timeouts and connection failures: ``TransientDeliveryError`` (the retry policy
  decides when to try again).
- Other 4xx (400 invalid request, 404 unknown id): ``Edi2RequestRejected``, a permanent error
  carrying the service's ``requestId`` and its error text, so an operator can quote them to
  Norsk helsenett. Neither ever holds the business document.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from pfhjem_msg.edi2.answer import AppRecAnswer
from pfhjem_msg.edi2.helseid import Edi2AuthError, Token, TokenClient
from pfhjem_msg.edi2.settings import API_VERSION, Edi2Settings
from pfhjem_msg.errors import PermanentDeliveryError, TransientDeliveryError

TRANSIENT_STATUS = frozenset({408, 425, 429})


class Edi2RequestRejected(PermanentDeliveryError):
    """The service refused a request as invalid (or does not know the id): sending the same
    again will not help."""

    def __init__(self, what: str, status: int, request_id: str | None, error: str | None) -> None:
        self.status = status
        self.request_id = request_id
        self.error = error
        super().__init__(
            f"the message service refused {what} ({status}: {error or 'no error text'}; "
            f"requestId {request_id or 'not given'}); quote the requestId to Norsk helsenett "
            "if the request looks right"
        )


@dataclass(frozen=True)
class ServiceMessage:
    """One unread message as the service lists it (with metadata)."""

    id: str
    receiver_her: int
    sender_her: int | None
    business_document_id: str | None
    """The business document's MsgId."""
    gen_date: str | None
    is_apprec: bool


@dataclass(frozen=True)
class ReceiverState:
    """What the service knows about one receiver of a message we sent (or of one we received:
    then the receiver is us, and the AppRec is the one we posted)."""

    receiver_her: int
    apprec_status: str | None
    """``Ok``, ``Rejected``, ``OkErrorInMessagePart``, or None when no AppRec has come."""
    errors: tuple[tuple[str, str | None], ...] = ()
    delivery_state: str | None = None
    """``Unconfirmed``, ``Acknowledged`` or ``Rejected`` (``status`` only)."""


def _uuid(value: Any, what: str) -> str:
    """A service id, checked before it goes into a URL path: a malformed answer must not be
    able to steer our requests elsewhere."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError as exc:
        raise TransientDeliveryError(f"the message service gave {what} that is not a valid id") from exc


class Edi2Client:
    def __init__(self, settings: Edi2Settings, tokens: TokenClient | None = None,
                 http: httpx.Client | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.base = settings.base_url.rstrip("/")
        self.http = http or httpx.Client(timeout=httpx.Timeout(settings.timeout), follow_redirects=False)
        self.tokens = tokens or TokenClient(settings.helseid, self.http)
        self._nonce: str | None = None

    def close(self) -> None:
        self.http.close()

    # -- the calls --------------------------------------------------------------------------

    def unread(self, her_ids: tuple[int, ...] | None = None) -> list[ServiceMessage]:
        """Unread messages to our HER-ids (in the service's default order: oldest GenDate first)."""
        params: list[tuple[str, str | int]] = [
            ("ReceiverHerIds", h) for h in (her_ids or self.settings.her_ids)
        ]
        params += [
            ("IncludeMetadata", "true"),
            ("MessagesToFetch", self.settings.batch),
        ]
        body = self._call("GET", "/Messages", "the listing of unread messages", params=params).json()
        if not isinstance(body, list):
            raise TransientDeliveryError("the message service answered the listing with something not a list")
        out = []
        for item in body:
            if not isinstance(item, dict) or not isinstance(item.get("receiverHerId"), int):
                raise TransientDeliveryError("the message service listed a message without a receiver HER-id")
            sender = item.get("senderHerId")
            doc_id = item.get("businessDocumentId")
            gen = item.get("businessDocumentGenDate")
            out.append(ServiceMessage(
                id=_uuid(item.get("id"), "a listed message"),
                receiver_her=item["receiverHerId"],
                sender_her=sender if isinstance(sender, int) else None,
                business_document_id=doc_id if isinstance(doc_id, str) else None,
                gen_date=gen if isinstance(gen, str) else None,
                is_apprec=item.get("isAppRec") is True,
            ))  # fmt: skip
        return out

    def business_document(self, message_id: str) -> bytes:
        """The message's business document, decoded from base64."""
        what = f"the business document of service message {message_id}"
        body = self._call(
            "GET", f"/Messages/{_uuid(message_id, 'a message id')}/business-document", what
        ).json()
        if not isinstance(body, dict) or not isinstance(body.get("businessDocument"), str):
            raise TransientDeliveryError(f"the message service sent {what} without a document")
        encoding = str(body.get("contentTransferEncoding") or "base64").lower()
        if encoding != "base64":
            raise Edi2RequestRejected(what, 200, None, f"unsupported contentTransferEncoding {encoding[:20]}")
        text = body["businessDocument"]
        if len(text) > self.settings.max_document_bytes * 4 // 3 + 4:
            raise Edi2RequestRejected(
                what, 200, None, f"larger than {self.settings.max_document_bytes} bytes"
            )
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise TransientDeliveryError(f"the message service sent {what} in broken base64") from exc

    def post_apprec(self, message_id: str, our_her: int, answer: AppRecAnswer) -> str | None:
        """Post our AppRec for a received message; returns the id the service gave it."""
        path = f"/Messages/{_uuid(message_id, 'a message id')}/apprec/{int(our_her)}"
        response = self._call("POST", path, f"the AppRec for service message {message_id}",
                              json=answer.request_body(), expect=(200, 201))  # fmt: skip
        return _created_id(response)

    def mark_read(self, message_id: str, her_id: int) -> None:
        path = f"/Messages/{_uuid(message_id, 'a message id')}/read/{int(her_id)}"
        self._call("PUT", path, f"marking service message {message_id} read", expect=(200, 204))

    def send(self, document: bytes, receivers: tuple[int, ...] = ()) -> str:
        """Send a business document (UTF-8 XML that says so in its declaration); returns the
        service's id of the new message. ``receivers`` limits delivery to those HER-ids of the
        document's receivers."""
        body: dict[str, Any] = {
            "businessDocument": base64.b64encode(document).decode("ascii"),
            "contentType": "application/xml",
            "contentTransferEncoding": "base64",
        }
        if receivers:
            body["receiverHerIdsSubset"] = [int(h) for h in receivers]
        response = self._call("POST", "/Messages", "a message to send", json=body, expect=(200, 201))
        created = _created_id(response)
        if created is None:
            raise TransientDeliveryError("the message service accepted a message but gave no id for it")
        return created

    def apprecs(self, message_id: str) -> list[ReceiverState]:
        """The AppRecs given for a message, per receiver."""
        path = f"/Messages/{_uuid(message_id, 'a message id')}/apprec"
        body = self._call("GET", path, f"the AppRecs of service message {message_id}").json()
        return [_receiver_state(item) for item in body] if isinstance(body, list) else []

    def status(self, message_id: str) -> list[ReceiverState]:
        """Delivery state and AppRec status per receiver of a message we sent."""
        path = f"/Messages/{_uuid(message_id, 'a message id')}/status"
        body = self._call("GET", path, f"the status of service message {message_id}").json()
        return [_receiver_state(item) for item in body] if isinstance(body, list) else []

    # -- the one way a call is made ---------------------------------------------------------

    def _headers(self, method: str, url: str, token: Token) -> dict[str, str]:
        headers = {
            "api-version": API_VERSION,
            "nhn-source-system": self.settings.source_system,
            "Accept": "application/json",
            "Authorization": f"{token.kind} {token.value}",
        }
        proof_key = self.tokens.proof_key
        if proof_key is not None:
            headers["DPoP"] = proof_key.proof(method, url, self._nonce, token.value)
        return headers

    def _call(self, method: str, path: str, what: str, *, params: Any = None, json: Any = None,
              expect: tuple[int, ...] = (200,)) -> httpx.Response:  # fmt: skip
        url = self.base + path
        token = self.tokens.token()
        renewed = answered_nonce = False
        while True:
            try:
                response = self.http.request(method, url, params=params, json=json,
                                             headers=self._headers(method, url, token))  # fmt: skip
            except httpx.TimeoutException as exc:
                raise TransientDeliveryError(f"the message service did not answer {what} in time") from exc
            except httpx.TransportError as exc:
                raise TransientDeliveryError(
                    f"cannot reach the message service for {what} ({type(exc).__name__})"
                ) from exc
            status = response.status_code
            nonce = response.headers.get("DPoP-Nonce")
            if nonce:
                self._nonce = nonce
            if status == 401 and nonce and not answered_nonce and _asks_nonce(response):
                answered_nonce = True
                continue
            if status in (401, 403):
                if not renewed:
                    renewed = True
                    token = self.tokens.renew(token)
                    continue
                request_id, _ = _error_of(response)
                raise Edi2AuthError(
                    f"the message service refused our token for {what} ({status}, requestId "
                    f"{request_id or 'not given'}) after a renewal; check the HelseID client's scope "
                    "and that its organisation may act for the configured HER-ids"
                )
            if status in expect:
                return response
            request_id, error = _error_of(response)
            if status >= 500 or status in TRANSIENT_STATUS:
                raise TransientDeliveryError(
                    f"the message service answered {status} for {what} (requestId {request_id or 'not given'})"
                )
            raise Edi2RequestRejected(what, status, request_id, error)


def _asks_nonce(response: httpx.Response) -> bool:
    return "use_dpop_nonce" in response.headers.get("WWW-Authenticate", "")


def _error_of(response: httpx.Response) -> tuple[str | None, str | None]:
    """The service's ``requestId`` and error text (with its validation errors), shortened."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    request_id = body.get("requestId")
    parts = [str(body["error"])] if body.get("error") else []
    errors = body.get("validationErrors")
    if isinstance(errors, list):
        parts += [str(e) for e in errors[:5]]
    text = "; ".join(parts)[:300] or None
    return (str(request_id)[:80] if request_id else None), text


def _created_id(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return _uuid(body, "a new message") if isinstance(body, str) else None


def _receiver_state(item: Any) -> ReceiverState:
    if not isinstance(item, dict) or not isinstance(item.get("receiverHerId"), int):
        raise TransientDeliveryError("the message service answered with a receiver that has no HER-id")
    errors = item.get("appRecErrorList") or []
    status = item.get("appRecStatus")
    state = item.get("transportDeliveryState")
    return ReceiverState(
        receiver_her=item["receiverHerId"],
        apprec_status=status if isinstance(status, str) else None,
        errors=tuple(
            (str(e.get("errorCode") or ""), e.get("details") if isinstance(e.get("details"), str) else None)
            for e in errors
            if isinstance(e, dict)
        ),
        delivery_state=state if isinstance(state, str) else None,
    )
