"""Hardened parsing of untrusted XML bytes.

Messages come from outside the municipality. The parser never reads a DTD, never expands an
entity, never opens a network connection or a file, and refuses input over a size, depth,
element or attribute limit before it costs memory or time (see ``Limits``). Each refusal is an Issue with its own code, so the
AppRec can say T01 and an operator can see exactly why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from lxml import etree

from pfhjem_msg.kith.issues import ID_LIKE, Issue, error

KITH_NS_PREFIX = "http://www.kith.no/xmlstds/"
KITH_ROOTS = frozenset({"MsgHead", "Message", "AppRec"})
XHTML_BLOCKS = frozenset(
    {"p", "div", "br", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}
)


@dataclass(frozen=True)
class Limits:
    """How much untrusted input the product accepts, so that every input up to ``max_bytes``
    gets a verdict in seconds and well under a gigabyte of memory.

    Real messages with scanned attachments reach tens of megabytes, but as one long base64
    text: a few thousand elements, a few dozen levels deep. What costs memory is the number
    of nodes (about 130 bytes per element and 340 per attribute once parsed), so those are
    capped by counting markup in the bytes before anything is built.
    """

    max_bytes: int = 64 * 1024 * 1024
    max_depth: int = 100
    max_elements: int = 100_000
    """Start tags, comments and processing instructions (counted in the bytes, so markup
    inside a comment or CDATA section counts too)."""
    max_attributes: int = 100_000
    """Attributes and namespace declarations in the whole document."""
    max_issues: int = 200
    """Issues kept per message; the rest are summed up in one ISSUES_TRUNCATED issue."""
    max_mime_depth: int = 8
    """How deeply MIME multiparts (and attached messages) may nest."""
    max_mime_parts: int = 100
    """MIME parts in the whole message, containers included."""
    max_mime_header_bytes: int = 64 * 1024
    """The header block of one MIME part."""


@dataclass
class ParsedXml:
    """The parsed document (None when it was refused) and what the parser found."""

    document: etree._Element | None
    issues: list[Issue] = field(default_factory=list)


_PARSER_OPTIONS = {
    "resolve_entities": False,
    "load_dtd": False,
    "dtd_validation": False,
    "no_network": True,
    # Lifts libxml2's 10 MB cap on one text node, so a large base64 attachment is read; the
    # caps that flag also lifts (node counts, depth) are enforced by parse_xml instead.
    "huge_tree": True,
    "remove_comments": False,
}


def _new_parser(recover: bool = False) -> etree.XMLParser:
    parser = etree.XMLParser(recover=recover, **_PARSER_OPTIONS)
    parser.resolvers.add(_RefuseAll())
    return parser


class _RefuseAll(etree.Resolver):  # type: ignore[misc]
    """Answers every request for an external resource with nothing."""

    def resolve(self, system_url: str, public_id: str, context: object) -> object:
        return self.resolve_string("", context)


_PARSER = _new_parser()
_RECOVER_PARSER = _new_parser(recover=True)
_START_TAG = re.compile(rb"<[A-Za-z_]")
_DECLARED_ENCODING = re.compile(r"^\s*<\?xml[^>]{0,200}?encoding\s*=\s*[\"']([^\"']{0,64})[\"']")
ACCEPTED_ENCODINGS = frozenset(
    {"utf-8", "utf8", "utf-16", "utf-16le", "utf-16be", "us-ascii", "ascii", "windows-1252", "cp1252"}
    | {f"iso-8859-{n}" for n in range(1, 16)}
    | {f"iso8859-{n}" for n in range(1, 16)}
    | {"latin1", "latin-1", "iso_8859-1"}
)
"""Encodings in which ``<`` and ``=`` are the bytes 0x3C and 0x3D, so markup can be counted in
the bytes. KITH messages are UTF-8 or ISO-8859-1; UTF-7, EBCDIC or UTF-32 would hide markup."""


@lru_cache(maxsize=8)
def _deeper_than(depth: int) -> etree.XPath:
    # /*/*/... evaluated in C: true when any element sits below ``depth`` levels.
    return etree.XPath("boolean(" + "/*" * (depth + 1) + ")")


def too_large(size: int, limits: Limits) -> list[Issue]:
    return [
        error(
            "XML_TOO_LARGE",
            f"the message is {size} bytes, over the limit of {limits.max_bytes}; "
            "raise [kith] max_bytes if such messages are expected",
            apprec_code="T01",
        )
    ]


def _refuse(code: str, message: str) -> ParsedXml:
    return ParsedXml(None, [error(code, message, apprec_code="T01")])


def _utf16(data: bytes) -> str | None:
    """The UTF-16 codec the bytes are in (by byte-order mark or a leading ``<``), else None."""
    head = data[:4]
    if head[:2] == b"\xff\xfe" and head[2:4] != b"\x00\x00":
        return "utf-16"
    if head[:2] == b"\xfe\xff":
        return "utf-16"
    if head[:2] == b"<\x00" and head[2:4] != b"\x00\x00":
        return "utf-16-le"
    if head[:2] == b"\x00<":
        return "utf-16-be"
    return None


def _encoding_refusal(data: bytes, utf16: str | None) -> ParsedXml | None:
    """Refuse encodings that would hide markup from the counts below (see ACCEPTED_ENCODINGS)."""
    head = data[:4]
    if head in (
        b"\x00\x00\x00<",
        b"<\x00\x00\x00",
        b"\x00\x00\xfe\xff",
        b"\xff\xfe\x00\x00",
        b"\x4c\x6f\xa7\x94",
    ):
        return _refuse(
            "XML_ENCODING_UNSUPPORTED",
            "the message is in UTF-32 or EBCDIC; KITH messages are UTF-8 or ISO-8859-1, "
            "ask the sender to send one of those",
        )
    prolog = data[:512].decode(utf16, errors="replace") if utf16 else data[:256].decode("latin-1")
    found = _DECLARED_ENCODING.match(prolog.lstrip("\ufeff\u00ef\u00bb\u00bf"))
    if found is None or found.group(1).strip().lower() in ACCEPTED_ENCODINGS:
        return None
    return _refuse(
        "XML_ENCODING_UNSUPPORTED",
        "the message declares an encoding this product does not read; KITH messages are "
        "UTF-8 or ISO-8859-1, ask the sender to send one of those",
    )


def _count_refusal(data: bytes, utf16: str | None, limits: Limits) -> ParsedXml | None:
    """Refuse a document with more nodes than the limits, judged from the bytes alone.

    Every element, comment and processing instruction starts with ``<`` not followed by
    ``/``, and every attribute has ``=`` followed by a quote or a blank; counting those is an upper
    bound that costs one pass in C, so a flood of siblings is refused before a tree is built.
    """
    text = data.decode(utf16, errors="replace").encode() if utf16 else data
    starts = text.count(b"<")
    if starts > limits.max_elements:  # end tags count too; subtract them only when it matters
        starts -= text.count(b"</")
    attributes = text.count(b"=")
    if attributes > limits.max_attributes:  # an attribute's "=" is followed by a quote or a blank
        attributes = sum(text.count(b"=" + after) for after in (b'"', b"'", b" ", b"\t", b"\r", b"\n"))
    if starts > limits.max_elements:
        return _refuse(
            "XML_TOO_MANY_ELEMENTS",
            f"the message has more than {limits.max_elements} elements; "
            "raise [kith] max_elements if such messages are expected",
        )
    if attributes > limits.max_attributes:
        return _refuse(
            "XML_TOO_MANY_ATTRIBUTES",
            f"the message has more than {limits.max_attributes} attributes; "
            "raise [kith] max_attributes if such messages are expected",
        )
    return None


def parse_xml(data: bytes, limits: Limits, recover: bool = False) -> ParsedXml:
    """Parse bytes into an element tree under the limits; never raises on bad input.

    ``recover`` asks libxml2 to salvage what it can from a broken document; the product uses it
    only to find the sender and MsgId for a negative AppRec, never to accept the content.
    """
    if len(data) > limits.max_bytes:
        return ParsedXml(None, too_large(len(data), limits))
    if not data or data.isspace():
        return _refuse("XML_EMPTY", "the message is empty")
    if _declares_dtd(data):
        return _refuse(
            "XML_DTD_FORBIDDEN",
            "the message declares a DTD; KITH messages never do, and DTDs are refused "
            "because they can expand entities or reach the network",
        )
    utf16 = _utf16(data)
    refused = _encoding_refusal(data, utf16) or _count_refusal(data, utf16, limits)
    if refused is not None:
        return refused
    parser = _RECOVER_PARSER if recover else _PARSER
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        text = str(exc.msg or exc)
        if "excessive depth" in text.lower() or "maximum depth" in text.lower():
            return _refuse("XML_TOO_DEEP", f"the message is nested deeper than the parser allows ({text})")
        return ParsedXml(
            None,
            [
                error(
                    "XML_NOT_WELL_FORMED",
                    f"not well-formed XML: {_safe(text)}",
                    line=exc.lineno or None,
                    apprec_code="T01",
                )
            ],
        )
    except (ValueError, LookupError) as exc:  # e.g. an encoding lxml does not know
        return _refuse("XML_NOT_WELL_FORMED", f"not readable as XML: {_safe(str(exc))}")
    if root is None:
        return _refuse("XML_NOT_WELL_FORMED", "no element could be read from the message")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        return _refuse("XML_DTD_FORBIDDEN", "the message declares a DTD; DTDs are refused")
    if _deeper_than(limits.max_depth)(root):
        return _refuse(
            "XML_TOO_DEEP",
            f"the message is nested deeper than {limits.max_depth} levels; "
            "raise [kith] max_depth if such messages are expected",
        )
    return ParsedXml(root)


def _declares_dtd(data: bytes) -> bool:
    """A DOCTYPE before the first element, in the bytes or (for UTF-16 input) in the text."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = data[:65536].decode("utf-16", errors="ignore")
        first = re.search(r"<[A-Za-z_]", text)
        prolog_text = text[: first.start()] if first else text
        return "<!DOCTYPE" in prolog_text or "<!ENTITY" in prolog_text
    first_tag = _START_TAG.search(data)
    prolog = data[: first_tag.start()] if first_tag else data
    return b"<!DOCTYPE" in prolog or b"<!ENTITY" in prolog


def _safe(text: str) -> str:
    """Parser messages name elements and attributes; the only content some quote is the bytes
    of a wrong encoding ("Bytes: 0x.."), which is dropped. The length is capped anyway."""
    return text.partition("Bytes:")[0].strip().rstrip(",")[:200]


def local(el: etree._Element) -> str:
    tag = el.tag
    if not isinstance(tag, str):
        return ""
    return tag.rpartition("}")[2]


def namespace(el: etree._Element) -> str:
    tag = el.tag
    if not isinstance(tag, str) or not tag.startswith("{"):
        return ""
    return tag[1:].partition("}")[0]


def find_kith_root(document: etree._Element) -> etree._Element | None:
    """The outermost MsgHead, Epikrise Message or AppRec, at the top or inside a wrapper.

    Outermost, because some senders nest a whole MsgHead inside RefDoc/Content."""
    for el in document.iter(tag=etree.Element):
        if local(el) in KITH_ROOTS and namespace(el).startswith(KITH_NS_PREFIX):
            return el
    return None


_NS_PART = re.compile(r"\{[^}]*\}")


def path_of(el: etree._Element, stop: etree._Element | None = None) -> str:
    """An XPath-like path of local names from ``stop`` (default: the document root) down to
    ``el``, with [n] where siblings share a name. Element names are the sender's text: a run
    of 11 digits in one (shaped like a national id) is not shown."""
    tree = el.getroottree()
    top = stop if stop is not None else tree.getroot()
    if el is top:
        return ID_LIKE.sub("(11 digits)", "/" + local(el))
    full = tree.getelementpath(el)
    if top is not tree.getroot():
        prefix = tree.getelementpath(top) + "/"
        if full.startswith(prefix):
            full = full[len(prefix) :]
    return ID_LIKE.sub("(11 digits)", "/" + local(top) + "/" + _NS_PART.sub("", full))


class Where:
    """Where an element sits, as a path computed only when read: a message yields dozens of
    locations and most are never shown to anyone."""

    __slots__ = ("_node", "_text", "_top")

    def __init__(self, node: etree._Element, top: etree._Element | None = None) -> None:
        self._node: etree._Element | None = node
        self._top = top
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:
            assert self._node is not None
            self._text = path_of(self._node, self._top)
            self._node = self._top = None
        return self._text

    def __repr__(self) -> str:
        return str(self)

    def __eq__(self, other: object) -> bool:
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


def text_of(el: etree._Element | None) -> str:
    """The text of an element, with line breaks where XHTML blocks end, so that words in
    separate paragraphs never run together and a phrase split by inline markup reads whole."""
    if el is None:
        return ""
    out: list[str] = []

    def walk(node: etree._Element) -> None:
        if node.text and isinstance(node.tag, str):
            out.append(node.text)
        for child in node:
            if isinstance(child.tag, str):
                walk(child)
                if local(child) in XHTML_BLOCKS:
                    out.append("\n")
            if child.tail:
                out.append(child.tail)

    walk(el)
    return "".join(out).strip()
