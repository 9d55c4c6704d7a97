"""`state_dir` must be written: a default beside the file put the store of the system's
``/etc/pfhjem-msg/config.toml`` in ``/etc/var``, a silent surprise for whoever backs up
``/var/lib``. Left out, it is a problem saying what to write, and where an earlier version
kept the state if a store is there. The demo, which writes it, runs unchanged."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pfhjem_msg.config import ConfigProblems, load
from tests.conftest import ROOT, write_config

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _without_state_dir(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(directory)
    text = config.read_text(encoding="utf-8").replace('state_dir = "var"\n', "")
    config.write_text(text, encoding="utf-8")
    return config


def _problems(config: Path) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigProblems) as exc:
        load(config)
    return [(p.key, p.line, p.message) for p in exc.value.problems]


def test_a_file_without_state_dir_is_a_problem_saying_what_to_write(tmp_path: Path) -> None:
    config = _without_state_dir(tmp_path / "etc" / "pfhjem-msg")
    config.write_text(config.read_text(encoding="utf-8") + "[retention]\npaylod_days = 1\n", encoding="utf-8")
    problems = _problems(config)
    assert [(key, line) for key, line, _ in problems][-1] == ("state_dir", None)  # beside the others
    assert [key for key, *_ in problems] == ["retention.paylod_days", "state_dir"]
    message = problems[-1][2]
    assert message.startswith('is required: set the directory for the store and its lock, e.g. state_dir = '
                              '"/var/lib/pfhjem-msg"')  # fmt: skip
    assert "before the first [section]" in message and "earlier version" not in message


@pytest.mark.parametrize("left", ["pfhjem-msg.sqlite3", "pfhjem-msg.lock"])
def test_a_store_where_the_old_default_put_it_is_named_so_it_is_not_left_behind(
    tmp_path: Path, left: str
) -> None:
    config = _without_state_dir(tmp_path / "etc" / "pfhjem-msg")
    earlier = tmp_path / "etc" / "var"
    earlier.mkdir()
    (earlier / left).touch()
    [(key, _, message)] = _problems(config)
    assert key == "state_dir" and f'write state_dir = "{earlier}" to go on with it, or move it' in message
    config.write_text(f'state_dir = "{earlier}"\n' + config.read_text(encoding="utf-8"), encoding="utf-8")
    assert load(config).state_dir == earlier  # the advice, followed, loads


def test_run_without_state_dir_refuses_and_makes_no_state_beside_the_file(tmp_path: Path) -> None:
    config = _without_state_dir(tmp_path / "etc" / "pfhjem-msg")
    result = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert (
        'state_dir: is required: set the directory for the store and its lock, e.g. state_dir = "/var/lib/'
        in result.stderr
    )
    assert not (tmp_path / "etc" / "var").exists() and "Traceback" not in result.stderr


def test_the_demo_runs_unchanged_with_its_state_under_var(tmp_path: Path) -> None:
    """README's first command, in a copy of the checkout's config/ (the developer's var/ is not
    touched)."""
    assert ".venv/bin/pfhjem-msg run --config config/demo.toml" in README.split("## Configuration")[0]
    shutil.copytree(ROOT / "config", tmp_path / "config")
    assert load(tmp_path / "config" / "demo.toml").state_dir == tmp_path / "var"
    result = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", "config/demo.toml"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "var" / "pfhjem-msg.sqlite3").is_file()


def test_the_reference_table_says_state_dir_is_required() -> None:
    row = next(line for line in README.splitlines() if line.startswith("| `state_dir` |"))
    assert row.split("|")[3].strip() == "required", row
