"""Writing the XML the product sends as text.

An lxml tree costs a few microseconds per element to build, more than everything else in an
AppRec together; the product writes one for every message it receives. Written as text, with
every value escaped and every character XML cannot carry dropped (a sender's name may hold a
control character; the AppRec must go out all the same), the same document costs a fraction.
Conformance is unchanged: tests validate what is written against the official schemas.
"""

from __future__ import annotations

import re

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SPECIAL = re.compile('[&<>"]')


def _clean(value: str) -> str:
    return _NOT_XML.sub("", value) if _NOT_XML.search(value) else value


def text(value: str) -> str:
    """``value`` as element content."""
    if value.isascii() and value.isprintable() and not _SPECIAL.search(value):
        return value  # the common case, decided in C (a set's isdisjoint makes a string per character)
    value = _clean(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value.replace("\r", "&#13;")


def attribute(value: str) -> str:
    """``value`` as an attribute value (between double quotes), line ends kept."""
    if value.isascii() and value.isprintable() and not _SPECIAL.search(value):
        return value
    value = (
        _clean(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )
    return value.replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;")


class XmlWriter:
    """An indented UTF-8 document, element by element, in document order: ``open`` and
    ``close`` around children, ``leaf`` for an element without any. An attribute whose value
    is None is left out."""

    def __init__(self) -> None:
        self._parts: list[str] = ["<?xml version='1.0' encoding='UTF-8'?>\n"]
        self._indent = ""

    def _start(self, name: str, attrs: dict[str, str | None]) -> str:
        return "".join(
            [self._indent, "<", name, *(f' {k}="{attribute(v)}"' for k, v in attrs.items() if v is not None)]
        )

    def leaf(self, name: str, content: str | None = None, **attrs: str | None) -> None:
        start = self._start(name, attrs) if attrs else self._indent + "<" + name
        if content is None:
            self._parts.append(start + "/>\n")
        else:
            self._parts.append(f"{start}>{text(content)}</{name}>\n")

    def open(self, name: str, **attrs: str | None) -> None:
        self._parts.append((self._start(name, attrs) if attrs else self._indent + "<" + name) + ">\n")
        self._indent += "  "

    def close(self, name: str) -> None:
        self._indent = self._indent[:-2]
        self._parts.append(f"{self._indent}</{name}>\n")

    def to_bytes(self) -> bytes:
        return "".join(self._parts).encode("utf-8")
