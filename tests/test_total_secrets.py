"""Schema and validation messages never quote what the sender put in a field: a value placed
in every element and attribute of the samples appears in no issue, however it is quoted or
whatever libxml2 phrase it imitates. Unknown codes appear as codes only."""

from __future__ import annotations

import pytest
from lxml import etree

from pfhjem_msg.kith.issues import Issue, code_text
from pfhjem_msg.kith.parse import Limits, find_kith_root, parse_xml
from pfhjem_msg.kith.schemas import describe
from pfhjem_msg.kith.verdict import Options, examine
from tests.conftest import SAMPLES

MARKERS = ("Nordmann", "01019912345")
SECRETS = [
    "Kari O'Nordmann",
    'Kari "Nordmann"',
    "01019912345",
    "Nordmann' is not a valid value of the atomic type 'Nordmann",
    "v1' does not match the fixed value constraint 'Nordmann",
    "x'. Expected is ( Nordmann ).",
    "Nordmann\n' is not accepted by the pattern '01019912345",
]
READABLE = [
    p
    for p in sorted(SAMPLES.glob("*.xml"))
    if not p.name.startswith("broken") and parse_xml(p.read_bytes(), Limits()).document is not None
]


def _leaks(issues: list[Issue]) -> list[str]:
    shown = [f"{i.code}: {i.message} at {i.path}" for i in issues]
    return [s for s in shown if any(m in s for m in MARKERS)]


def _fields(root: etree._Element) -> list[tuple[etree._Element, str | None]]:
    """Every element with text, and every attribute, as (element, attribute name or None)."""
    out: list[tuple[etree._Element, str | None]] = []
    for el in root.iter(etree.Element):
        if el.text and el.text.strip() and len(el) == 0:
            out.append((el, None))
        out.extend((el, name) for name in el.attrib)
    return out


def _with_secret(data: bytes, secret: str, only: int | None = None) -> bytes:
    document = parse_xml(data, Limits()).document
    assert document is not None
    for n, (el, attribute) in enumerate(_fields(document)):
        if only is not None and n != only:
            continue
        if attribute is None:
            el.text = secret
        else:
            el.set(attribute, secret)
    return etree.tostring(document, xml_declaration=True, encoding="UTF-8")


@pytest.mark.parametrize("sample", READABLE, ids=lambda p: p.name)
def test_secret_in_every_field_appears_in_no_issue(sample: object, options: Options) -> None:
    for secret in SECRETS:
        verdict = examine(_with_secret(sample.read_bytes(), secret), "secret", options)  # type: ignore[attr-defined]
        assert verdict.issues, "a message with every field replaced must have issues"
        assert _leaks(verdict.issues) == [], secret


def test_secret_in_each_single_field_appears_in_no_issue(options: Options) -> None:
    """One field at a time, so checks that only fire on one field (code lists, identifiers,
    MIGversion, dates) see the secret where they look."""
    for name in (
        "dlg11-marked-attachment.xml",
        "apprec11-rejected.xml",
        "epi12-marked-heading.xml",
        "epi11-marked-msgdescr.xml",
    ):
        data = (SAMPLES / name).read_bytes()
        document = parse_xml(data, Limits()).document
        assert document is not None
        root = find_kith_root(document)
        assert root is not None
        for n in range(len(_fields(document))):
            for secret in ("Kari O'Nordmann", "01019912345"):
                verdict = examine(_with_secret(data, secret, only=n), "secret", options)
                assert _leaks(verdict.issues) == [], (name, n, secret)


@pytest.mark.parametrize(
    "type_name, message",
    [
        ("SCHEMAV_CVC_DATATYPE_VALID_1_2_1",
         "Element '{urn:x}GenDate': 'Nordmann' is not a valid value of the atomic type 'Nordmann' is not a "
         "valid value of the atomic type 'xs:dateTime'."),
        ("SCHEMAV_CVC_ELT_5_2_2_2_2",
         "Element '{urn:x}MIGversion': The actual value 'a' does not match the fixed value constraint "
         "'Nordmann' does not match the fixed value constraint 'v1.2 2006-05-24'."),
        ("SCHEMAV_CVC_AU",
         "Element '{urn:x}Type', attribute 'V': The value 'Nordmann' does not match the fixed value "
         "constraint '01019912345 x'y'."),
        ("SCHEMAV_CVC_PATTERN_VALID",
         "Element '{urn:x}Error', attribute 'S': [facet 'pattern'] The value 'Nordmann' is not accepted by "
         "the pattern '01019912345'."),
        ("SCHEMAV_CVC_ENUMERATION_VALID",
         "Element '{urn:x}Sex', attribute 'V': [facet 'enumeration'] The value 'Nordmann' is not an "
         "element of the set {'1', '2'}."),
        ("SCHEMAV_CVC_MAXLENGTH_VALID",
         "Element '{urn:x}Id': [facet 'maxLength'] The value 'Nordmann' has a length of '8'; this exceeds "
         "the allowed maximum length of '5'."),
        ("SCHEMAV_CVC_IDC_SOMETHING_NEW", "Element '{urn:x}Id': duplicate key-sequence ['Nordmann']."),
        ("SCHEMAV_ELEMENT_CONTENT",
         "Element '{urn:x}Nordmann x': This element is not expected. Expected is ( {urn:x}MsgId )."),
        ("SCHEMAV_CVC_COMPLEX_TYPE_4", "Element '{urn:x}Type': The attribute 'V' is required but missing."),
        ("SCHEMAV_UNKNOWN", "Nordmann"),
    ],
)  # fmt: skip
def test_every_libxml2_message_form_is_rendered_without_values(type_name: str, message: str) -> None:
    text = describe(type_name, message)
    assert not any(m in text for m in MARKERS), text
    assert text


def test_fixed_value_message_names_what_the_schema_wants() -> None:
    text = describe(
        "SCHEMAV_CVC_ELT_5_2_2_2_2",
        "Element '{urn:x}MIGversion': The actual value 'Kari' does not match the fixed value "
        "constraint 'v1.2 2006-05-24'.",
    )
    assert text == "the value of element MIGversion must be 'v1.2 2006-05-24'"


def test_unknown_codes_appear_as_codes_only() -> None:
    assert code_text("DIALOG_UKJENT") == "'DIALOG_UKJENT'"
    assert code_text("2.16.578.1.12.4.1.1.9051") == "'2.16.578.1.12.4.1.1.9051'"
    for value in ("Kari Nordmann", "01019912345", "a'b", "x" * 41, "", "  "):
        assert value.strip() == "" or value not in code_text(value)
