"""The schemas in pfhjem_msg/xsd/ are built from pfhjem_msg/xsd/src/ and are our own writing, not copies."""

from __future__ import annotations

import difflib
import subprocess
import sys

import pytest

from tests.conftest import OFFICIAL_XSD, ROOT


def test_generated_schemas_match_their_sources() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_xsd.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_every_schema_compiles_and_imports_resolve_locally(own_schemas) -> None:  # type: ignore[no-untyped-def]
    expected = {
        "http://www.kith.no/xmlstds/msghead/2006-05-24",
        "http://www.kith.no/xmlstds/dialog/2006-10-11",
        "http://www.kith.no/xmlstds/dialog/2013-01-23",
        "http://www.kith.no/xmlstds/epikrise/2012-02-15",
        "http://www.kith.no/xmlstds/epikrise/2006-09-23",
        "http://www.kith.no/xmlstds/apprec/2004-11-21",
        "http://www.kith.no/xmlstds/apprec/2012-02-15",
    }
    assert expected <= set(own_schemas.namespaces)


def test_own_schemas_are_not_copies_of_the_official_ones() -> None:
    if not OFFICIAL_XSD.is_dir():
        pytest.skip("official schemas absent (../shared/kith-xsd)")
    official = {
        p.name: [x.strip() for x in p.read_text("latin-1").splitlines() if x.strip()]
        for p in OFFICIAL_XSD.glob("*.xsd")
    }
    for ours in (ROOT / "pfhjem_msg" / "xsd").glob("*.xsd"):
        mine = [x.strip() for x in ours.read_text("utf-8").splitlines() if x.strip()]
        for name, lines in official.items():
            ratio = difflib.SequenceMatcher(None, mine, lines, autojunk=False).ratio()
            # A file of a dozen lines shares its closing tags with anything; a real schema must not.
            limit = 0.3 if len(mine) > 20 else 0.5
            assert ratio < limit, f"pfhjem_msg/xsd/{ours.name} resembles {name} ({ratio:.2f})"
