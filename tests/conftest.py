"""Shared fixtures. Tests that need ``../shared/`` (the official schemas and real samples) skip
with a clear reason when it is absent."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from pfhjem_msg.kith.schemas import SchemaSet, load_schema_set
from pfhjem_msg.kith.verdict import Options

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
OFFICIAL_XSD = SHARED / "kith-xsd"
REAL_SAMPLES = SHARED / "real-samples"
SAMPLES = ROOT / "samples"


def real_sample_files() -> list[Path]:
    if not REAL_SAMPLES.is_dir():
        return []
    return sorted(REAL_SAMPLES.glob("*.xml"))


def sample_files() -> list[Path]:
    return sorted(p for p in SAMPLES.iterdir() if p.suffix in (".xml", ".eml"))


@pytest.fixture(scope="session")
def official_schemas() -> SchemaSet:
    if not OFFICIAL_XSD.is_dir():
        pytest.skip(f"official schemas not found at {OFFICIAL_XSD} (../shared/ is absent)")
    return load_schema_set(OFFICIAL_XSD)


@pytest.fixture(scope="session")
def own_schemas() -> SchemaSet:
    return load_schema_set()


@pytest.fixture(scope="session")
def options(own_schemas: SchemaSet) -> Options:
    return Options(schemas=own_schemas)


@dataclass
class SampleRow:
    file: str
    standard: str
    valid: bool
    marked: bool
    apprec: str
    codes: list[str]


def sample_table() -> list[SampleRow]:
    """The table in samples/README.md: what the product must do with each sample."""
    rows = []
    for line in (SAMPLES / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 7 or not re.search(r"\.(xml|eml)$", cells[0]):
            continue
        rows.append(
            SampleRow(cells[0], cells[2], cells[3] == "yes", cells[4] == "yes", cells[5], cells[6].split())
        )
    return rows
