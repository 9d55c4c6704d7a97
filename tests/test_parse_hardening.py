"""Untrusted bytes: no DTD, no entity expansion, no network or file access, size and depth
caps, each refusal fast, bounded in memory, and with its own code."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
from lxml import etree

from pfhjem_msg.kith.batch import examine_file
from pfhjem_msg.kith.parse import _PARSER, Limits, parse_xml
from pfhjem_msg.kith.verdict import Options, examine

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24"><MsgInfo>&lol9;</MsgInfo></MsgHead>
"""


def xxe(target: str) -> bytes:
    return (
        f'<?xml version="1.0"?>\n<!DOCTYPE m [<!ENTITY x SYSTEM "{target}">]>\n'
        f'<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24"><MsgInfo>&x;</MsgInfo></MsgHead>'
    ).encode()


def _measured(fn):  # type: ignore[no-untyped-def]
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, elapsed, peak


def _codes(verdict) -> list[str]:  # type: ignore[no-untyped-def]
    return [i.code for i in verdict.issues]


def test_billion_laughs_is_refused_fast(options: Options) -> None:
    verdict, elapsed, peak = _measured(lambda: examine(BILLION_LAUGHS, "bomb", options))
    assert "XML_DTD_FORBIDDEN" in _codes(verdict)
    assert not verdict.well_formed
    assert elapsed < 0.5 and peak < 5_000_000


def test_xxe_file_and_network_are_refused(options: Options) -> None:
    for target in ("file:///etc/passwd", "http://127.0.0.1:9/evil.xml"):
        verdict = examine(xxe(target), "xxe", options)
        assert "XML_DTD_FORBIDDEN" in _codes(verdict)


def test_parser_itself_neither_expands_nor_fetches() -> None:
    # Behind the DOCTYPE refusal, the parser is configured to resolve nothing.
    root = etree.fromstring(xxe("file:///etc/passwd"), _PARSER)
    assert b"root:" not in etree.tostring(root)
    try:  # libxml2 may also stop it on its own amplification guard; either way nothing expands
        root = etree.fromstring(BILLION_LAUGHS, _PARSER)
    except etree.XMLSyntaxError as exc:
        assert "amplification" in str(exc)
    else:
        assert len(etree.tostring(root)) < 10_000


def test_doctype_after_bom_or_in_utf16_is_refused(options: Options) -> None:
    assert "XML_DTD_FORBIDDEN" in _codes(examine(b"\xef\xbb\xbf" + BILLION_LAUGHS, "bom", options))
    utf16 = BILLION_LAUGHS.decode().replace(
        '<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>'
    )
    assert "XML_DTD_FORBIDDEN" in _codes(examine(utf16.encode("utf-16"), "utf16", options))


def test_200_mb_file_is_refused_unread(tmp_path: Path, options: Options) -> None:
    big = tmp_path / "big.xml"
    with big.open("wb") as fh:
        fh.write(b"<MsgHead>")
        fh.truncate(200 * 1024 * 1024)
    verdict, elapsed, peak = _measured(lambda: examine_file(big, options))
    assert _codes(verdict) == ["XML_TOO_LARGE"]
    assert elapsed < 0.5 and peak < 1_000_000


def test_oversized_bytes_are_refused_before_parsing(options: Options) -> None:
    small = Options(schemas=options.schemas, limits=Limits(max_bytes=1000))
    verdict = examine(b"<a>" + b"x" * 5000 + b"</a>", "big", small)
    assert _codes(verdict) == ["XML_TOO_LARGE"]


def test_depth_limit_is_configurable_and_fast() -> None:
    nested = b"<a>" * 150 + b"</a>" * 150
    assert [i.code for i in parse_xml(nested, Limits(max_depth=100)).issues] == ["XML_TOO_DEEP"]
    assert parse_xml(nested, Limits(max_depth=200)).document is not None
    huge = b"<a>" * 100_000 + b"</a>" * 100_000
    result, elapsed, _ = _measured(lambda: parse_xml(huge, Limits()))
    assert [i.code for i in result.issues] == ["XML_TOO_DEEP"]
    assert elapsed < 0.5


def _nested(depth: int, inner: bytes = b"") -> bytes:
    return b"<a>" * depth + inner + b"</a>" * depth


@pytest.mark.parametrize(
    "name, document",
    [
        ("plain", _nested(12)),
        ("comment full of end tags", b"<!-- " + b"</a>" * 40 + b" -->" + _nested(12)),
        ("cdata full of end tags", _nested(12, b"<![CDATA[" + b"</a>" * 40 + b"]]>")),
        ("processing instruction", b'<?xml version="1.0"?><?pi </a></a></a>?>' + _nested(12)),
        ("utf-8 bom and blanks", b"\xef\xbb\xbf \n" + _nested(12)),
        ("utf-16", "\ufeff".encode("utf-16-le") + _nested(12).decode().encode("utf-16-le")),
    ],
)
def test_depth_limit_holds_whatever_the_bytes_look_like(name: str, document: bytes) -> None:
    """Comments, CDATA and processing instructions full of end tags, byte-order marks and
    UTF-16 do not hide nesting from the depth limit."""
    assert [i.code for i in parse_xml(document, Limits(max_depth=10)).issues] == ["XML_TOO_DEEP"], name
    assert parse_xml(document, Limits(max_depth=12)).document is not None, name


def test_each_refusal_has_its_own_code() -> None:
    cases = {
        b"": "XML_EMPTY",
        b"<a><b></a>": "XML_NOT_WELL_FORMED",
        BILLION_LAUGHS: "XML_DTD_FORBIDDEN",
    }
    for data, code in cases.items():
        assert [i.code for i in parse_xml(data, Limits()).issues] == [code]
        assert all(i.apprec_code == "T01" for i in parse_xml(data, Limits()).issues)
