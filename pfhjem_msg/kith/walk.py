"""Lenient navigation over a KITH tree by local name.

Real senders write elements out of order, in the wrong namespace or with stray blanks in
codes. The readers find what is there regardless, and note each deviation as an Issue so an
operator can tell the sender; schema validation reports the same documents strictly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from lxml import etree

from pfhjem_msg.kith import codes
from pfhjem_msg.kith.issues import Issue, code_text, warning
from pfhjem_msg.kith.model import Attachment, Code, Ident, PartyKind, PartyLevel
from pfhjem_msg.kith.parse import Where, local, path_of

_local = threading.local()
_LOCAL_NAMES: dict[str, str] = {}
"""{namespace}Name -> Name: the KITH vocabulary is small, and a lookup is cheaper than a slice."""
_LOCAL_NAMES_MAX = 4096


def _kids(el: etree._Element) -> dict[str, list[etree._Element]]:
    """Children of ``el`` by local name, built once per element per read (see ``fresh_index``).
    Readers look up several children of each element; one pass over them is far cheaper than
    one lxml search per name."""
    try:
        cache: dict[etree._Element, dict[str, list[etree._Element]]] = _local.cache
    except AttributeError:
        cache = _local.cache = {}
    found = cache.get(el)
    if found is None:
        found = {}
        for c in el[:]:  # slicing builds the list in C; iterating an element is far slower
            tag = c.tag
            if tag.__class__ is str:
                name = _LOCAL_NAMES.get(tag)
                if name is None:
                    name = tag[tag.rfind("}") + 1 :]
                    if len(_LOCAL_NAMES) < _LOCAL_NAMES_MAX:  # senders choose the tags
                        _LOCAL_NAMES[tag] = name
                bucket = found.get(name)
                if bucket is None:
                    found[name] = [c]
                else:
                    bucket.append(c)
        cache[el] = found
    return found


def fresh_index() -> None:
    """Forget the child index of the previous document (call before reading a new one)."""
    _local.cache = {}


def child(el: etree._Element | None, name: str) -> etree._Element | None:
    """The first child named ``name``, in whatever namespace the sender put it."""
    if el is None:
        return None
    found = _kids(el).get(name)
    return found[0] if found else None


def children(el: etree._Element | None, name: str) -> list[etree._Element]:
    if el is None:
        return []
    return _kids(el).get(name, [])


def text(el: etree._Element | None, name: str | None = None) -> str | None:
    """Stripped text of ``el`` (or of its child ``name``); None when absent or empty."""
    target = child(el, name) if name else el
    if target is None or target.text is None:
        return None
    value = target.text.strip()
    return value or None


def attr(el: etree._Element | None, name: str, attribute: str = "V") -> str | None:
    target = child(el, name)
    if target is None:
        return None
    value = target.get(attribute)
    return value.strip() if value is not None and value.strip() else None


@dataclass
class Reader:
    """Carries the KITH root (paths are relative to it) and the deviations found so far."""

    root: etree._Element
    issues: list[Issue] = field(default_factory=list)
    quiet: bool = False
    """Read without noting deviations: payloads are read on demand, and a message's issues
    must not depend on whether anyone has looked at its payload."""

    def __post_init__(self) -> None:
        fresh_index()

    def path(self, el: etree._Element) -> Where:
        return Where(el, self.root)

    def deviation(self, code: str, message: str, el: etree._Element) -> None:
        if self.quiet:
            return
        self.issues.append(warning(code, message, line=el.sourceline, path=path_of(el, self.root)))

    def code(self, el: etree._Element | None, name: str | None = None) -> Code | None:
        target = child(el, name) if name else el
        if target is None:
            return None
        raw = target.get("V")
        if raw is None:
            return None
        value = raw.strip()
        if value != raw:
            self.deviation(
                "CODE_WHITESPACE",
                f"code value {code_text(value)} has surrounding blanks, which were dropped",
                target,
            )
        if not value:
            return None
        return Code(value, (target.get("S") or "").strip() or None, target.get("DN"))

    def ident(self, el: etree._Element, person: bool) -> Ident | None:
        """An Ident (Id + TypeId). ``person`` picks the expected code system (8116 or 9051)."""
        id_text = text(el, "Id")
        type_el = child(el, "TypeId")
        type_code = self.code(type_el) if type_el is not None else None
        if id_text is None or type_code is None:
            self.deviation("IDENT_INCOMPLETE", "an Ident lacks Id or TypeId and was ignored", el)
            return None
        type_value = type_code.value.upper()
        expected = codes.PERSON_ID_SYSTEM if person else codes.ORGANISATION_ID_SYSTEM
        known = codes.PERSON_ID_TYPES if person else codes.ORGANISATION_ID_TYPES
        if type_value not in known and type_value not in codes.ALL_ID_TYPES:
            self.deviation(
                "ID_TYPE_UNKNOWN",
                f"id type {code_text(type_value)} is not in code system {'8116' if person else '9051'}",
                type_el if type_el is not None else el,
            )
        if type_code.system and type_code.system not in codes.ID_SYSTEMS_ACCEPTED:
            self.deviation(
                "ID_TYPE_OID",
                f"id type {code_text(type_value)} names code system {code_text(type_code.system)}; expected {expected}",
                type_el if type_el is not None else el,
            )
        return Ident(id_text, type_value, type_code.system)

    def level(self, el: etree._Element, kind: PartyKind, name: str | None) -> PartyLevel:
        person = kind in ("professional", "person", "patient")
        idents = [i for i in (self.ident(x, person) for x in children(el, "Ident")) if i]
        return PartyLevel(kind, name, idents, self.path(el), self.code(el, "RoleToPatient"))


def person_name(el: etree._Element) -> str | None:
    parts = [text(el, n) for n in ("GivenName", "MiddleName", "FamilyName")]
    name = " ".join(p for p in parts if p)
    return name or None


_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BLANKS = b" \t\r\n"


def base64_size(content: etree._Element | None) -> int | None:
    """The decoded size of the first Base64Container, or None when it is not valid base64.

    Counted, not decoded: an attachment may be tens of megabytes, and deleting the alphabet
    with ``bytes.translate`` checks it in C without a second copy of the content."""
    if content is None:
        return None
    for el in content.iter(tag=etree.Element):
        if local(el) == "Base64Container":
            text = el.text or ""
            if not text.isascii():
                return None
            raw = text.encode("ascii").translate(None, _BLANKS)
            padding = raw.translate(None, _BASE64_ALPHABET)
            if len(raw) % 4 or padding not in (b"", b"=", b"==") or not raw.endswith(padding):
                return None
            return len(raw) // 4 * 3 - len(padding)
    return None


def read_attachment(r: Reader, refdoc: etree._Element) -> Attachment:
    content = child(refdoc, "Content")
    return Attachment(
        path=r.path(refdoc),
        mime_type=text(refdoc, "MimeType"),
        size=base64_size(content),
        description=text(refdoc, "Description"),
        inline=content is not None,
    )
