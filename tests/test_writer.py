"""The text writer for what the product sends: whatever a sender's data holds, the result is
well-formed XML that reads back as the same values (less characters XML cannot carry)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from pfhjem_msg.kith.writer import XmlWriter

NS = "urn:test"
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _written(content: str, value: str) -> etree._Element:
    w = XmlWriter()
    w.open("Root", xmlns=NS)
    w.leaf("Text", content)
    w.leaf("Attr", V=value, DN=None)
    w.open("Nested", V=value)
    w.leaf("Empty")
    w.close("Nested")
    w.close("Root")
    return etree.fromstring(w.to_bytes(), etree.XMLParser(resolve_entities=False, no_network=True))


@given(st.text(), st.text())
def test_any_text_reads_back_as_written(content: str, value: str) -> None:
    root = _written(content, value)
    kept_content, kept_value = _NOT_XML.sub("", content), _NOT_XML.sub("", value)
    assert root.findtext(f"{{{NS}}}Text") == kept_content
    attr = root.find(f"{{{NS}}}Attr")
    assert attr is not None and attr.get("V") == kept_value and "DN" not in attr.attrib
    nested = root.find(f"{{{NS}}}Nested")
    assert nested is not None and nested.get("V") == kept_value
    assert nested.find(f"{{{NS}}}Empty") is not None


def test_markup_and_line_ends_survive() -> None:
    tricky = 'Å & <b>"sitat"</b>\r\n\tneste linje ]]> \x01\x1f'
    root = _written(tricky, tricky)
    expected = 'Å & <b>"sitat"</b>\r\n\tneste linje ]]> '
    assert root.findtext(f"{{{NS}}}Text") == expected
    assert root.find(f"{{{NS}}}Attr").get("V") == expected  # type: ignore[union-attr]
