"""Taking the KITH XML out of what a hub hands over.

A hub may write the bare XML, a MIME mail with the XML as body or attachment, or the whole
ebXML message: a multipart/related MIME whose first part is the SOAP envelope and whose next
part is the payload. The payload must already be decrypted; an encrypted (CMS) part is
refused with a clear reason, since only the hub holds the key.
"""

from __future__ import annotations

import binascii
import codecs
import email
import email.policy
import re
from dataclasses import dataclass, field
from email.message import Message as MimeMessage
from typing import Literal

from pfhjem_msg.kith.issues import Issue, error, warning
from pfhjem_msg.kith.parse import Limits

Transport = Literal["xml", "mime", "ebxml"]
_BOM = b"\xef\xbb\xbf"
_XML_TYPES = ("text/xml", "application/xml")
_SOAP_NS = (b"http://schemas.xmlsoap.org/soap/envelope/", b"http://www.w3.org/2003/05/soap-envelope")
_ENCODING_DECL = re.compile(rb"^\s*<\?xml[^>]*encoding\s*=", re.IGNORECASE)
_HEADER_LINE = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*:[ \t]")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_NON_BLANK = re.compile(rb"\S")


@dataclass
class Unwrapped:
    xml: bytes | None
    transport: Transport
    issues: list[Issue] = field(default_factory=list)


def _looks_like_xml(data: bytes) -> bool:
    first = _NON_BLANK.search(data)
    head = data[first.start() : first.start() + 8] if first else b""
    if head.startswith(_BOM):
        after = _NON_BLANK.search(data, first.start() + 3) if first else None
        head = data[after.start() : after.start() + 8] if after else b""
    return head.startswith(b"<") or head.startswith(b"\xff\xfe") or head.startswith(b"\xfe\xff")


def _is_soap(data: bytes) -> bool:
    head = data[:4096]
    return any(ns in head for ns in _SOAP_NS) and b"Envelope" in head


class _Refused(Exception):
    """The MIME structure is over a limit; carries the issue that says so."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.code)
        self.issue = issue


@dataclass(frozen=True)
class _Leaf:
    ctype: str
    body: bytes
    """Transfer-decoded, and transcoded to UTF-8 where the MIME charset governs."""


def _too_complex(code: str, what: str, setting: str) -> _Refused:
    return _Refused(
        error(
            code,
            f"the MIME message {what}; raise [kith] {setting} if such messages are expected",
            apprec_code="T01",
        )
    )


def _headers(data: bytes, start: int, end: int, limits: Limits) -> tuple[MimeMessage, int]:
    """The headers of the part in data[start:end], and where its body starts.

    Only the header block goes to the email package, whose cost grows with every line it
    sees: a body of millions of lines or a part of millions of headers would take minutes.
    """
    if data.startswith(b"\n", start) or data.startswith(b"\r\n", start):  # no headers at all
        return email.message_from_bytes(b"", policy=email.policy.compat32), data.index(b"\n", start) + 1
    window = min(end, start + limits.max_mime_header_bytes + 4)
    blank = _BLANK_LINE.search(data, start, window)
    if blank is None:
        if end - start > limits.max_mime_header_bytes:
            raise _too_complex(
                "MIME_HEADERS_TOO_LARGE",
                f"has a header block over {limits.max_mime_header_bytes} bytes",
                "max_mime_header_bytes",
            )
        head_end = body_start = end
    else:
        head_end, body_start = blank.start() + 1, blank.end()
    head = email.message_from_bytes(data[start:head_end], policy=email.policy.compat32)
    return head, body_start


def _decoded(head: MimeMessage, body: bytes) -> bytes:
    """The body with its Content-Transfer-Encoding undone, as leniently as mail readers do."""
    cte = str(head.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte == "base64":
        try:
            return binascii.a2b_base64(body)
        except (binascii.Error, ValueError):
            try:
                return binascii.a2b_base64(body + b"==")
            except (binascii.Error, ValueError):
                return body
    if cte == "quoted-printable":
        return binascii.a2b_qp(body)
    return body


def _transcoded(head: MimeMessage, payload: bytes, issues: list[Issue]) -> bytes:
    """A charset on the MIME part governs XML that has no declaration of its own."""
    charset = head.get_content_charset()
    if not charset or charset in ("utf-8", "utf8", "us-ascii") or _ENCODING_DECL.match(payload):
        return payload
    try:
        if not codecs.lookup(charset)._is_text_encoding:
            raise LookupError(charset)
        return payload.decode(charset).encode("utf-8")
    except (LookupError, UnicodeError, ValueError):
        issues.append(
            warning(
                "MIME_CHARSET_UNKNOWN",
                "a MIME part names a charset that is unknown or does not fit its bytes; "
                "the part is read as the XML itself declares (UTF-8 when it declares nothing)",
            )
        )
        return payload


def _leaves(data: bytes, limits: Limits, issues: list[Issue]) -> list[_Leaf]:
    """The single parts of a MIME message, in order, walked without recursion and within the
    depth, part and header limits; each part is a pair of offsets into ``data`` until it is
    a leaf, so nesting copies nothing."""
    out: list[_Leaf] = []
    stack: list[tuple[int, int, int]] = [(0, len(data), 0)]
    parts = 0
    while stack:
        start, end, depth = stack.pop()
        parts += 1
        if parts > limits.max_mime_parts:
            raise _too_complex(
                "MIME_TOO_MANY_PARTS", f"has more than {limits.max_mime_parts} parts", "max_mime_parts"
            )
        if depth > limits.max_mime_depth:
            raise _too_complex(
                "MIME_TOO_DEEP", f"nests parts deeper than {limits.max_mime_depth} levels", "max_mime_depth"
            )
        head, body_start = _headers(data, start, end, limits)
        ctype = head.get_content_type()
        if ctype == "message/rfc822":
            stack.append((body_start, end, depth + 1))
            continue
        boundary = head.get_boundary() if ctype.startswith("multipart/") else None
        if boundary:
            children = _split(
                data, body_start, end, boundary.encode("utf-8", "replace"), limits.max_mime_parts
            )
            stack.extend((s, e, depth + 1) for s, e in reversed(children))
            continue
        out.append(_Leaf(ctype, _transcoded(head, _decoded(head, data[body_start:end]), issues)))
    return out


def _split(data: bytes, start: int, end: int, boundary: bytes, most: int) -> list[tuple[int, int]]:
    """The parts between the delimiter lines of one multipart, as offsets into ``data``; at
    most ``most`` + 1 of them, which is enough to tell that there are too many. A multipart
    without its closing delimiter ends where its container ends, as mail readers have it."""
    delimiter = b"--" + boundary
    found: list[tuple[int, int]] = []  # (where the line break before it starts, where the line ends)
    closed = False
    pos = start
    while pos < end and len(found) <= most + 1:
        at = data.find(delimiter, pos, end)
        if at < 0:
            break
        line_end = data.find(b"\n", at, end)
        line_end = end if line_end < 0 else line_end + 1
        if at == start or data[at - 1 : at] == b"\n":
            before = at if at == start else at - (2 if data[at - 2 : at] == b"\r\n" else 1)
            found.append((before, line_end))
            if data.startswith(b"--", at + len(delimiter)):
                closed = True
                break
        pos = line_end
    if found and not closed:
        found.append((end, end))
    return [(found[i][1], found[i + 1][0]) for i in range(len(found) - 1)]


def unwrap(data: bytes, limits: Limits | None = None) -> Unwrapped:
    """The XML to read, and how it arrived; never raises on bad input."""
    if _looks_like_xml(data) or not data or data.isspace():
        return Unwrapped(data, "ebxml" if _is_soap(data) else "xml")
    if not _HEADER_LINE.match(data.lstrip(b"\r\n")):
        return Unwrapped(
            None,
            "xml",
            [
                error(
                    "XML_NOT_WELL_FORMED", "the message is neither XML nor a MIME message", apprec_code="T01"
                )
            ],
        )
    issues: list[Issue] = []
    try:
        leaves = _leaves(data.lstrip(b"\r\n"), limits or Limits(), issues)
    except _Refused as refused:
        return Unwrapped(None, "mime", [refused.issue])
    xml_parts: list[bytes] = []
    soap_seen = False
    encrypted = False
    for leaf in leaves:
        if leaf.ctype in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
            encrypted = True
            continue
        if not leaf.body.strip():
            continue
        if leaf.ctype in _XML_TYPES or _looks_like_xml(leaf.body):
            if _is_soap(leaf.body):
                soap_seen = True
                continue
            xml_parts.append(leaf.body)
    transport: Transport = "ebxml" if soap_seen else "mime"
    if xml_parts:
        if len(xml_parts) > 1:
            issues.append(
                warning(
                    "MIME_SEVERAL_XML",
                    f"the MIME message holds {len(xml_parts)} XML parts; the first is read",
                )
            )
        return Unwrapped(xml_parts[0], transport, issues)
    if encrypted:
        return Unwrapped(
            None,
            transport,
            [
                error(
                    "ENVELOPE_ENCRYPTED",
                    "the payload is still encrypted (CMS/PKCS#7); the message hub must decrypt "
                    "messages before handing them over",
                    apprec_code="T01",
                )
            ],
        )
    return Unwrapped(
        None,
        transport,
        [error("ENVELOPE_NO_PAYLOAD", "the MIME message holds no XML payload", apprec_code="T01")],
    )
