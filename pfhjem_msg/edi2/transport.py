"""Sending through the message service: what a destination with ``transport = "edi2"`` does,
and how the receiver's AppRec for it is read back.

The service takes only UTF-8 documents that say so in their first line. What we build (AppRecs,
GP copies, reminders) is written that way already; a document we pass on as it came (a
case-unit copy of an ISO-8859-1 original) is re-encoded: parsed with the hardened parser and
written out again as UTF-8. Re-encoding keeps every character and leaves a signature valid,
since canonicalisation works on characters, not on the encoding.

A delivery is done when the service answers with the new message's id, which is kept with the
delivery for reading the receipt. ``POST /Messages`` has no idempotency key: a crash after the
service accepted a document but before the delivery is marked sends the same bytes (the same
MsgId) again, which the receiver's duplicate check recognises, as with e-mail delivery.
"""

from __future__ import annotations

import re

from lxml import etree

from pfhjem_msg.edi2.answer import receipt_of
from pfhjem_msg.edi2.client import Edi2Client
from pfhjem_msg.errors import PermanentDeliveryError
from pfhjem_msg.kith.parse import Limits, parse_xml

_UTF8_DECLARATION = re.compile(rb"""<\?xml\s[^>]*encoding\s*=\s*["']utf-8["'][^>]*\?>""", re.IGNORECASE)
_BOM = b"\xef\xbb\xbf"


def utf8_document(document: bytes, limits: Limits | None = None) -> bytes:
    """The document as UTF-8 with the declaration in its first line; unchanged if it is so."""
    body = document.removeprefix(_BOM)
    first = body.split(b"\n", 1)[0]
    if _UTF8_DECLARATION.match(first):
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return body
    parsed = parse_xml(document, limits or Limits())
    if parsed.document is None:
        codes = ", ".join(sorted({i.code for i in parsed.issues})) or "unreadable"
        raise PermanentDeliveryError(
            f"the document cannot be sent through the message service: it is not readable XML ({codes}); "
            "an operator must look at the message"
        )
    out: bytes = etree.tostring(parsed.document.getroottree(), encoding="UTF-8", xml_declaration=True)
    return out


def send(client: Edi2Client, document: bytes, her_id: str | int | None) -> str:
    """Send one document to ``her_id`` (one of the receivers it names); returns the service's
    id for it, to keep with the delivery."""
    receivers = (int(her_id),) if her_id is not None else ()
    return client.send(utf8_document(document), receivers)


def receipt(client: Edi2Client, service_id: str, her_id: str | int) -> tuple[str, str] | None:
    """The receiver's AppRec for a message we sent, as (8258 status, error codes), or None
    while it has not come: what the store's receipt and the 96-hour check are fed with."""
    for state in client.apprecs(service_id):
        if state.receiver_her == int(her_id):
            return receipt_of(state.apprec_status, state.errors)
    return None
