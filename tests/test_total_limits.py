"""The limits behind "every input gets a verdict": each is a field of Limits, each refusal has
its own code and an AppRec code, and legitimate messages stay well inside them."""

from __future__ import annotations

import base64
from dataclasses import fields

import pytest

from pfhjem_msg.kith.envelope import unwrap
from pfhjem_msg.kith.issues import Issue, capped, error, warning
from pfhjem_msg.kith.parse import Limits, parse_xml
from pfhjem_msg.kith.verdict import Options, examine
from tests.conftest import SAMPLES, sample_files

TEXT_SAMPLE = SAMPLES / "dlg11-marked-kreftpasienter.xml"


def _codes(issues: list[Issue]) -> list[str]:
    return [i.code for i in issues]


def test_every_limit_is_a_field_with_a_default() -> None:
    names = {f.name for f in fields(Limits)}
    assert names >= {"max_bytes", "max_depth", "max_elements", "max_attributes", "max_issues",
                     "max_mime_depth", "max_mime_parts", "max_mime_header_bytes"}  # fmt: skip
    assert all(isinstance(getattr(Limits(), name), int) for name in names)


def test_every_sample_is_well_inside_the_limits(options: Options) -> None:
    tight = Limits(max_elements=2_000, max_attributes=2_000, max_mime_depth=2, max_mime_parts=4)
    small = Options(schemas=options.schemas, limits=tight)
    for path in sample_files():
        codes = _codes(examine(path.read_bytes(), path.name, small).issues)
        assert not {c for c in codes if "TOO_" in c}, path.name


def test_text_node_over_libxml2s_10_mb_cap_is_read() -> None:
    data = b"<a>" + b"QUJD" * 3_000_000 + b"</a>"
    parsed = parse_xml(data, Limits())
    assert parsed.issues == [] and parsed.document is not None
    assert len(parsed.document.text or "") == 12_000_000


def test_element_count_includes_comments_and_is_configurable() -> None:
    data = b"<a>" + b"<b/>" * 50 + b"<!---->" * 50 + b"</a>"
    assert _codes(parse_xml(data, Limits(max_elements=100)).issues) == ["XML_TOO_MANY_ELEMENTS"]
    assert parse_xml(data, Limits(max_elements=101)).document is not None


def test_attribute_count_sees_blanks_around_the_equals_sign() -> None:
    data = b"<a " + b" ".join(b"x%d = '1'" % i for i in range(20)) + b"/>"
    assert _codes(parse_xml(data, Limits(max_attributes=19)).issues) == ["XML_TOO_MANY_ATTRIBUTES"]
    assert parse_xml(data, Limits(max_attributes=20)).document is not None


def test_utf16_siblings_are_counted_too() -> None:
    data = ("<a>" + "<b/>" * 200 + "</a>").encode("utf-16")
    assert _codes(parse_xml(data, Limits(max_elements=100)).issues) == ["XML_TOO_MANY_ELEMENTS"]
    assert parse_xml(data, Limits(max_elements=201)).document is not None


@pytest.mark.parametrize(
    "data",
    [
        b'<?xml version="1.0" encoding="UTF-7"?>+ADw-a/+AD4-',
        b'<?xml version="1.0" encoding="IBM037"?><a/>',
        b"\x4c\x6f\xa7\x94\x93\x40\xa5\x85",
        "<a/>".encode("utf-32-le"),
    ],
    ids=["utf-7", "ebcdic-declared", "ebcdic-detected", "utf-32"],
)
def test_encodings_that_hide_markup_are_refused(data: bytes) -> None:
    issues = parse_xml(data, Limits()).issues
    assert _codes(issues) == ["XML_ENCODING_UNSUPPORTED"]
    assert issues[0].apprec_code == "T01"


def test_iso_8859_1_sample_is_still_read(options: Options) -> None:
    assert examine((SAMPLES / "dlg11-iso-8859-1-crlf.xml").read_bytes(), "latin", options).valid


def _mime(content_type: str, body: bytes, encoding: str = "8bit") -> bytes:
    return (
        f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
    ).encode() + body


def test_mime_depth_and_parts_are_configurable() -> None:
    xml = TEXT_SAMPLE.read_bytes()
    inner = _mime("text/xml", xml)
    two_deep = _mime('multipart/mixed; boundary="o"', b"--o\r\n" + _mime(
        'multipart/mixed; boundary="i"', b"--i\r\n" + inner + b"\r\n--i--\r\n") + b"\r\n--o--\r\n")  # fmt: skip
    assert unwrap(two_deep, Limits()).xml is not None
    assert _codes(unwrap(two_deep, Limits(max_mime_depth=1)).issues) == ["MIME_TOO_DEEP"]
    assert _codes(unwrap(two_deep, Limits(max_mime_parts=2)).issues) == ["MIME_TOO_MANY_PARTS"]
    assert unwrap(two_deep, Limits(max_mime_parts=3)).xml == xml


def test_mime_multipart_without_closing_delimiter_is_read_to_its_end() -> None:
    xml = TEXT_SAMPLE.read_bytes()
    mail = _mime('multipart/mixed; boundary="b"', b"--b\r\nContent-Type: text/xml\r\n\r\n" + xml)
    assert unwrap(mail, Limits()).xml == xml


def test_mime_base64_and_quoted_printable_are_decoded() -> None:
    xml = TEXT_SAMPLE.read_bytes()
    assert unwrap(_mime("application/xml", base64.encodebytes(xml), "base64")).xml == xml
    qp = xml.replace(b"=", b"=3D").replace("ø".encode(), b"=C3=B8")
    assert unwrap(_mime("text/xml", qp, "quoted-printable")).xml == xml


@pytest.mark.parametrize("charset", ["undefined", "base64", "x-nonsense", "hex", "rot13"])
def test_charset_that_is_not_a_text_encoding_is_a_warning(charset: str, options: Options) -> None:
    body = TEXT_SAMPLE.read_bytes().split(b"?>", 1)[1]  # no declaration: the charset governs
    verdict = examine(_mime(f"text/xml; charset={charset}", body), "charset", options)
    assert verdict.valid
    assert _codes(verdict.issues) == ["MIME_CHARSET_UNKNOWN"]


def test_issue_cap_keeps_each_apprec_code_and_counts_the_rest() -> None:
    issues = [warning("W", f"w{i}") for i in range(10)] + [error("E", "e", apprec_code="E36")]
    issues += [warning("W", "late") for _ in range(5)]
    kept = capped(issues, 4)
    assert _codes(kept) == ["W", "W", "W", "W", "E", "ISSUES_TRUNCATED"]
    assert kept[-1].severity == "info" and kept[-1].message.startswith("11 more")
    assert capped(issues[:4], 4) == issues[:4]
