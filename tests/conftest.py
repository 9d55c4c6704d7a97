"""Shared fixtures. Tests that need ``../shared/`` (the official schemas and real samples) skip
with a clear reason when it is absent."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pfhjem_msg.kith.schemas import SchemaSet, load_schema_set
from pfhjem_msg.kith.verdict import Options
from pfhjem_msg.store.sqlite import SqliteStore
from tests.store_backends import (
    BACKENDS,
    PgServer,
    StoreFactory,
    empty_tables,
    pg_server_fixture,
    postgres_factory,
    sqlite_factory,
)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
OFFICIAL_XSD = SHARED / "kith-xsd"
REAL_SAMPLES = SHARED / "real-samples"
SAMPLES = ROOT / "samples"


def _tree(directory: Path) -> dict[str, tuple[int, int]]:
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.rglob("*") if p.is_file()}  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def developer_state_untouched() -> Iterator[None]:
    """No test may write the checkout's ``var/`` (the demo configuration's state): a test works
    on a copy in its own directory. Checked over the whole run, so a new test that forgets is
    caught the first time it runs."""
    before = _tree(ROOT / "var")
    yield
    after = _tree(ROOT / "var")
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"tests wrote the checkout's var/ ({len(changed)} files, e.g. {changed[:3]})"


def real_sample_files() -> list[Path]:
    if not REAL_SAMPLES.is_dir():
        return []
    return sorted(REAL_SAMPLES.glob("*.xml"))


def sample_files() -> list[Path]:
    return sorted(p for p in SAMPLES.iterdir() if p.suffix in (".xml", ".eml"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A real SQLite store of the daemon's kind in the test's own directory."""
    s = SqliteStore(tmp_path / "state" / "pfhjem-msg.sqlite3")
    yield s
    s.close()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The test run's PostgreSQL databases, dropped at the end (fails in CI, skips elsewhere,
    when PostgreSQL cannot be reached)."""
    yield from pg_server_fixture()


@pytest.fixture(scope="session")
def contract_pg_url(pg_server: PgServer) -> str:
    """One migrated database for the contract suite, emptied before each test."""
    from pfhjem_msg.store.postgres import PostgresStore

    url = pg_server.fresh()
    PostgresStore(url).close()
    return url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens empty stores of each backend in turn (every call: another handle on the same store)."""
    if request.param == "postgresql":
        url = request.getfixturevalue("contract_pg_url")
        empty_tables(url)
        factory = postgres_factory(url)
    else:
        factory = sqlite_factory(tmp_path)
    yield factory
    factory.close_all()


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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    directory: Path,
    *,
    smtp_intake_port: int | None = None,
    case_unit: str = 'transport = "dir"',
    extra: str = "",
    settle: float = 0.0,
    workers: int = 1,
    lease_seconds: float | None = None,
) -> Path:
    """A configuration like the demo one, with every path under ``directory``."""
    registry = directory / "gp-registry.csv"
    registry.write_text((ROOT / "config" / "gp-registry.csv").read_text(encoding="utf-8"), encoding="utf-8")
    smtp = f'[intake.smtp]\nhost = "127.0.0.1"\nport = {smtp_intake_port}\n' if smtp_intake_port else ""
    text = f"""
state_dir = "var"
[intake]
spool = "var/inbox"
settle_seconds = {settle}
poll_seconds = 0.05
{smtp}
[daemon]
sweep_seconds = 0.2
workers = {workers}
{f"lease_seconds = {lease_seconds}" if lease_seconds is not None else ""}
[hub]
outbox = "var/outbox"
[gp_registry]
file = "gp-registry.csv"
[[municipality]]
name = "Fjordvik kommune"
her_ids = ["8300001", "8300010"]
case_unit = {{ her_id = "8300010", name = "Tildelingskontoret", {case_unit}, path = "var/case-units/fjordvik" }}
[[municipality]]
name = "Åsli kommune"
her_ids = ["8400001", "8400010"]
case_unit = {{ her_id = "8400010", name = "Tjenestekontoret", transport = "dir", path = "var/case-units/asli" }}
{extra}
"""
    path = directory / "config.toml"
    path.write_text(text, encoding="utf-8")
    (directory / "var" / "inbox").mkdir(parents=True, exist_ok=True)
    return path
