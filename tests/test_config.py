"""The configuration cannot be silently wrong: misspelt keys and sections, quoted booleans,
numbers where text belongs and values out of range are problems, each reported with its key,
its line and its municipality, all at once."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from pfhjem_msg.config import ConfigProblems, load
from pfhjem_msg.config_lines import key_lines
from pfhjem_msg.errors import ConfigError
from pfhjem_msg.kith.parse import Limits

BASE = """\
state_dir = "var"

[[municipality]]
name = "Fjordvik kommune"
her_ids = ["8300001", "8300010"]
case_unit = { her_id = "8300010", name = "Tildelingskontoret", transport = "dir" }

[[municipality]]
name = "Åsli kommune"
her_ids = ["8400001", "8400010"]
case_unit = { her_id = "8400010", name = "Tjenestekontoret", transport = "dir" }
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _line(text: str, fragment: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if fragment in line)


def _problems(path: Path) -> list[tuple[str, int | None, str, str | None]]:
    with pytest.raises(ConfigProblems) as exc:
        load(path)
    return [(p.key, p.line, p.message, p.municipality) for p in exc.value.problems]


TYPOS = [
    # (what is appended to BASE, key reported, text on the line it is reported at, message part)
    ("[retention]\npaylod_days = 180\n", "retention.paylod_days", "paylod_days", "did you mean payload_days"),
    ("[intake]\nsetle_seconds = 5\n", "intake.setle_seconds", "setle_seconds", "did you mean settle_seconds"),
    ("[apprec]\nreject_schema_erors = true\n", "apprec.reject_schema_erors", "erors", "did you mean"),
    ('[metric]\naddress = "127.0.0.1:9464"\n', "metric", "[metric]", "unknown section; did you mean metrics"),
    # a section only implied by its sub-table's header, or by a dotted key, is where it first appears
    ("[delivery.retry]\nmax_attempts = 3\n", "delivery", "[delivery.retry]", "unknown section; known here"),
    ("[retry]\nbackoff.max_seconds = 60\n", "retry.backoff", "backoff.max", "unknown section; known here"),
    ('[smtp]\nstarttls = "false"\n', "smtp.starttls", "starttls", "true or false, without quotes"),
    ("[smtp]\nhost = 25\n", "smtp.host", "host = 25", "text in quotes"),
    ("[retry]\nfactor = 0\njitter = 0.2\n", "retry.factor", "factor", "greater than or equal to 1"),
    ("[retry]\njitter = 1.5\n", "retry.jitter", "jitter", "less than or equal to 1"),
    ("[smtp]\nport = 0\n", "smtp.port", "port = 0", "greater than or equal to 1"),
    ("[smtp]\nport = 65536\n", "smtp.port", "port = 65536", "less than or equal to 65535"),
    (
        "[retention]\npayload_days = 0\n",
        "retention.payload_days",
        "payload_days",
        "greater than or equal to 1",
    ),
    ("[daemon]\nworkers = 0\n", "daemon.workers", "workers", "greater than or equal to 1"),
    ("[kith]\nmax_depth = 0\n", "kith.max_depth", "max_depth", "greater than or equal to 1"),
    ('[kith]\nmax_bytes = "64M"\n', "kith.max_bytes", "max_bytes", "whole number, without quotes"),
    ("[kith]\nrequire_signature = 1\n", "kith.require_signature", "require_signature", "true or false"),
    (
        '[[kith.sender]]\nher_id = "1"\n[[kith.sender]]\nher_id = 8300020\n',
        "kith.sender[1].her_id",
        "8300020",
        "HER-id",
    ),
    ('[intake.smtp]\nallow = ["10.0.0.0/33"]\n', "intake.smtp.allow[0]", "allow", "address or network"),
    ('[metrics]\naddress = "localhost"\n', "metrics.address", "address", "host:port"),
    (
        "[retention]\npayload_days = 30\nmetadata_days = 10\n",
        "retention.metadata_days",
        "metadata_days",
        "must not be shorter than payload_days",
    ),
    (
        '[smtp]\npassword = "env:PFHJEM_TEST_NEVER_SET"\n',
        "smtp.password",
        "password",
        "environment variable PFHJEM_TEST_NEVER_SET, which is not set",
    ),
    ('[gp_registry]\nfile = "missing.csv"\n', "gp_registry.file", "missing.csv", "does not exist"),
    ('schemas_dir = "x"\n', "schemas_dir", "schemas_dir", "unknown key"),
]


@pytest.mark.parametrize(("extra", "key", "on_line", "message"), TYPOS, ids=[t[1] for t in TYPOS])
def test_a_wrong_key_or_value_is_a_problem_at_its_line(
    tmp_path: Path, extra: str, key: str, on_line: str, message: str
) -> None:
    # top-level keys must come before the first table
    text = extra + BASE if not extra.startswith("[") else BASE + extra
    problems = _problems(_write(tmp_path, text))
    assert [(k, line) for k, line, _, _ in problems] == [(key, _line(text, on_line))], problems
    assert message in problems[0][2]


def test_a_bad_key_in_the_second_municipality_names_it_and_its_line(tmp_path: Path) -> None:
    text = BASE.replace(
        'name = "Tjenestekontoret", transport = "dir"', 'name = "Tjenestekontoret", transprt = "dir"'
    )
    problems = _problems(_write(tmp_path, text))
    assert problems == [
        (
            "municipality[1].case_unit.transprt",
            _line(text, "transprt"),
            "unknown key; did you mean transport?",
            "Åsli kommune",
        )
    ]
    with pytest.raises(ConfigError) as exc:
        load(tmp_path / "config.toml")
    message = str(exc.value)
    assert (
        f'municipality[1].case_unit.transprt (line {_line(text, "transprt")}, in municipality "Åsli kommune"): '
        "unknown key" in message
    )


def test_a_missing_key_points_at_its_table(tmp_path: Path) -> None:
    text = BASE + '[[municipality]]\nname = "Bakkedal kommune"\nher_ids = ["8500001"]\n'
    assert _problems(_write(tmp_path, text)) == [
        ("municipality[2].case_unit", _line(text, "Bakkedal") - 1, "is required", "Bakkedal kommune")
    ]


def test_a_destination_gets_what_its_transport_needs(tmp_path: Path) -> None:
    text = BASE + (
        '[municipality.kreftkoordinator]\nname = "Kreftkoordinator"\ntransport = "smtp"\n'
        '[municipality.default]\nname = "Postmottak"\ntransport = "hub"\n'
    )
    assert _problems(_write(tmp_path, text)) == [
        ("municipality[1].kreftkoordinator.address", _line(text, "[municipality.kreftkoordinator]"),
         'is required for transport "smtp"', "Åsli kommune"),
        ("municipality[1].default.her_id", _line(text, "[municipality.default]"),
         'is required for transport "hub"', "Åsli kommune"),
    ]  # fmt: skip


def test_every_problem_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    extras = [extra for extra, *_ in TYPOS if extra.startswith(("[retention]\npaylod", "[metric]"))]
    text = (
        BASE.replace('her_ids = ["8400001", "8400010"]', 'her_ids = ["8400001", 8400010]')
        + "".join(extras)
        + (
            '[smtp]\nhost = 25\nstarttls = "false"\n[retry]\nfactor = 0\njitter = 0.5\n'
            "[intake]\nsetle_seconds = 1\n[apprec]\nreject_schema_erors = true\n"
        )
    )
    problems = _problems(_write(tmp_path, text))
    assert [k for k, *_ in problems] == [
        "municipality[1].her_ids[1]",
        "retention.paylod_days",
        "metric",
        "smtp.host",
        "smtp.starttls",
        "retry.factor",
        "intake.setle_seconds",
        "apprec.reject_schema_erors",
    ]
    assert [line for _, line, *_ in problems] == sorted(line for _, line, *_ in problems)
    assert problems[0][3] == "Åsli kommune"


def test_the_same_her_id_in_two_municipalities(tmp_path: Path) -> None:
    text = BASE.replace('her_ids = ["8400001", "8400010"]', 'her_ids = ["8400001", "8300010"]')
    assert _problems(_write(tmp_path, text)) == [
        ("municipality[1].her_ids", _line(text, '"8400001", "8300010"'),
         "HER-id 8300010 is already Fjordvik kommune's", "Åsli kommune")
    ]  # fmt: skip


def test_not_toml_is_one_problem_with_the_parser_position(tmp_path: Path) -> None:
    problems = _problems(_write(tmp_path, BASE + "[retry\n"))
    assert [(k, line) for k, line, *_ in problems] == [("(file)", 12)]
    assert "not valid TOML" in problems[0][2]


def test_a_valid_file_gives_strict_types_and_resolved_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PFHJEM_TEST_SMTP_PASSWORD", "from-the-environment")
    text = BASE + (
        '[smtp]\nhost = "smtp.fjordvik.kommune.no"\nport = 587\nstarttls = true\nusername = "pfhjem"\n'
        'password = "env:PFHJEM_TEST_SMTP_PASSWORD"\n'
        '[intake.smtp]\nport = 0\nallow = ["10.0.0.0/8", "127.0.0.1"]\n'
        "[retry]\nfactor = 1\nbase_seconds = 0\njitter = 0\n"
        '[hub]\noutbox = "out"\n'
    )
    s = load(_write(tmp_path, text))
    assert s.smtp.starttls is True and s.smtp.port == 587 and s.smtp.password == "from-the-environment"
    assert s.intake.smtp is not None and s.intake.smtp.port == 0  # 0: a free port is picked
    assert s.intake.smtp.allow == ("10.0.0.0/8", "127.0.0.1")
    assert s.intake.smtp.max_message_bytes == s.kith.limits.max_bytes
    assert s.retry.factor == 1.0 and isinstance(s.retry.factor, float)
    assert s.state_dir == tmp_path / "var" and s.hub_outbox == tmp_path / "out"
    assert [m.case_unit.path for m in s.municipalities] == [
        tmp_path / "var" / "case-units" / "tildelingskontoret",
        tmp_path / "var" / "case-units" / "tjenestekontoret",
    ]
    assert s.apprec.known_her_ids == {"8300001", "8300010", "8400001", "8400010"}
    assert s.municipalities[0].default == s.municipalities[0].case_unit


def test_every_input_limit_is_a_kith_key(tmp_path: Path) -> None:
    """A limit added to Limits is configurable without touching the configuration code."""
    changed = {}
    for f in dataclasses.fields(Limits):
        value = getattr(Limits(), f.name)
        if isinstance(value, bool):
            changed[f.name] = not value
        elif isinstance(value, int | float):
            changed[f.name] = value + 1
    assert {"max_bytes", "max_depth"} <= set(changed)
    lines = "".join(f"{k} = {str(v).lower()}\n" for k, v in changed.items())
    s = load(_write(tmp_path, BASE + "[kith]\n" + lines))
    assert {k: getattr(s.kith.limits, k) for k in changed} == changed


def test_settings_travel_to_a_worker_process_unchanged(tmp_path: Path) -> None:
    s = load(
        _write(tmp_path, BASE + '[[kith.sender]]\nher_id = "8300020"\norganisation_number = "974589095"\n')
    )
    assert pickle.loads(pickle.dumps(s)) == s


def test_key_lines_follow_tables_arrays_and_inline_tables() -> None:
    text = (
        'a = 1\n[x]\nlist = [\n  "]",\n  2,\n]\ns = """\n[not.a.table]\nk = 1\n"""\n'
        '[[m]]\nname = "one"\n[[m]]\nd = { e = 1 }\n[m.sub]\n"quoted.key" = 2\n[[m.inner]]\nq = 1\n'
    )
    lines = key_lines(text)
    assert lines[("a",)] == 1 and lines[("x", "list")] == 3 and lines[("x", "s")] == 7
    assert ("not", "a", "table") not in lines and ("x", "k") not in lines
    assert lines[("m", 0, "name")] == 12 and lines[("m", 1)] == 13 and lines[("m", 1, "d")] == 14
    assert lines[("m", 1, "sub", "quoted.key")] == 16 and lines[("m", 1, "inner", 0, "q")] == 18
    # tables only implied: where they first appear
    assert lines[("m",)] == 11 and lines[("m", 1, "inner")] == 17
    implied = key_lines("[p.q.r]\nk = 1\n[s]\nt.u.v = 2\n[p.w]\n")
    assert implied[("p",)] == implied[("p", "q")] == implied[("p", "q", "r")] == 1
    assert implied[("s", "t")] == implied[("s", "t", "u")] == 4 and implied[("p", "w")] == 5
