"""Taking the KITH XML out of what a hub hands over.

A hub may write the bare XML, a MIME mail with the XML as body or attachment, or the whole
ebXML message: a multipart/related MIME whose first part is the SOAP envelope and whose next
part is the payload. The payload must already be decrypted; an encrypted (CMS) part is
refused with a clear reason, since only the hub holds the key.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.message import Message as MimeMessage
from typing import Literal

from pfhjem_msg.kith.issues import Issue, error, warning

Transport = Literal["xml", "mime", "ebxml"]
_BOM = b"\xef\xbb\xbf"
_XML_TYPES = ("text/xml", "application/xml")
_SOAP_NS = (b"http://schemas.xmlsoap.org/soap/envelope/", b"http://www.w3.org/2003/05/soap-envelope")
_ENCODING_DECL = re.compile(rb"^\s*<\?xml[^>]*encoding\s*=", re.IGNORECASE)
_HEADER_LINE = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*:[ \t]")


@dataclass
class Unwrapped:
    xml: bytes | None
    transport: Transport
    issues: list[Issue] = field(default_factory=list)


def _looks_like_xml(data: bytes) -> bool:
    head = data.lstrip()
    if head.startswith(_BOM):
        head = head[3:].lstrip()
    return head.startswith(b"<") or head.startswith(b"\xff\xfe") or head.startswith(b"\xfe\xff")


def _is_soap(data: bytes) -> bool:
    head = data[:4096]
    return any(ns in head for ns in _SOAP_NS) and b"Envelope" in head


def _part_bytes(part: MimeMessage) -> bytes:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return b""
    charset = part.get_content_charset()
    # A charset on the MIME part governs XML that has no declaration of its own.
    if charset and charset.lower() not in ("utf-8", "utf8", "us-ascii") and not _ENCODING_DECL.match(payload):
        try:
            return payload.decode(charset).encode("utf-8")
        except (LookupError, UnicodeDecodeError):
            return payload
    return payload


def unwrap(data: bytes) -> Unwrapped:
    """The XML to read, and how it arrived; never raises on bad input."""
    if _looks_like_xml(data) or not data.strip():
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
    mime = email.message_from_bytes(data, policy=email.policy.compat32)
    xml_parts: list[bytes] = []
    soap_seen = False
    encrypted = False
    for part in mime.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if ctype in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
            encrypted = True
            continue
        body = _part_bytes(part)
        if not body.strip():
            continue
        if ctype in _XML_TYPES or _looks_like_xml(body):
            if _is_soap(body):
                soap_seen = True
                continue
            xml_parts.append(body)
    transport: Transport = "ebxml" if soap_seen else "mime"
    if xml_parts:
        issues = []
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
