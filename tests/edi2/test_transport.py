"""Sending through the message service: documents go as UTF-8 with the declaration the service
demands (the fake refuses anything else), and the receiver's AppRec is read back in the form
the store records receipts in."""

from __future__ import annotations

import pytest
from lxml import etree

from pfhjem_msg.edi2 import transport
from pfhjem_msg.errors import PermanentDeliveryError
from tests.conftest import SAMPLES
from tests.edi2.conftest import SENDER_HER, ClientKey, client_for
from tests.edi2_fake import FakeService


def _c14n(data: bytes) -> bytes:
    return etree.tostring(etree.fromstring(data), method="c14n")


def test_iso_8859_1_original_is_sent_as_utf8_with_the_same_content(
    fake: FakeService, client_key: ClientKey
) -> None:
    original = (SAMPLES / "dlg11-iso-8859-1-crlf.xml").read_bytes()
    assert b"ISO-8859-1" in original.split(b"\n", 1)[0]
    sent = transport.send(client_for(fake, client_key), original, SENDER_HER)
    document = fake.outbound[sent].document
    assert document.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert _c14n(document) == _c14n(original)
    assert fake.outbound[sent].receivers == [SENDER_HER]
    assert fake.problems == []


def test_utf8_document_is_sent_unchanged(fake: FakeService, client_key: ClientKey) -> None:
    original = (SAMPLES / "dlg11-marked-tema.xml").read_bytes()
    sent = transport.send(client_for(fake, client_key), original, None)
    assert fake.outbound[sent].document == original.removeprefix(b"\xef\xbb\xbf")
    assert fake.outbound[sent].receivers is None


def test_billion_laughs_document_is_not_sent(fake: FakeService, client_key: ClientKey) -> None:
    """Billion laughs in something we were asked to pass on: refused, never expanded, never sent."""
    bomb = (SAMPLES / "broken-dtd.xml").read_bytes()
    with pytest.raises(PermanentDeliveryError, match="not readable XML"):
        transport.send(client_for(fake, client_key), bomb, SENDER_HER)
    assert fake.outbound == {}


def test_receipt_is_read_per_receiver(fake: FakeService, client_key: ClientKey) -> None:
    client = client_for(fake, client_key)
    sent = transport.send(client, (SAMPLES / "dlg11-marked-tema.xml").read_bytes(), SENDER_HER)
    assert transport.receipt(client, sent, SENDER_HER) is None
    fake.answer_outbound(sent, SENDER_HER, "Ok", [])
    assert transport.receipt(client, sent, str(SENDER_HER)) == ("1", "")
    assert fake.problems == []
