"""A group-readable directory inside the state directory is a problem of the configuration
itself: the state directory stays 0700, so the hub or a case unit's group could never reach
the files there, and nothing else would say so until someone asked why nothing arrived. It
is found where the file is loaded, so `config check`, `run` and a reload (SIGHUP) all refuse
it, naming the key and its line; so is a group that does not exist."""

from __future__ import annotations

import grp
import os
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from pfhjem_msg.cli import main
from pfhjem_msg.config import ConfigProblems, load
from pfhjem_msg.daemon import Daemon
from tests.conftest import ROOT, write_config

GROUP = grp.getgrgid(os.getgid()).gr_name  # a group that exists here
NO_GROUP = "no-such-group-pfhjem"


def _config(tmp_path: Path, outbox: str, case_unit_path: str, group: str = GROUP) -> Path:
    config = write_config(tmp_path)
    text = config.read_text(encoding="utf-8")
    text = text.replace('outbox = "var/outbox"', f'outbox = "{outbox}"\ngroup = "{group}"')
    text = text.replace('path = "var/case-units/fjordvik"', f'path = "{case_unit_path}", group = "{group}"')
    config.write_text(text, encoding="utf-8")
    return config


def _line(config: Path, fragment: str) -> int:
    lines = config.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, start=1) if fragment in line)


def test_config_check_names_each_group_directory_inside_the_state_directory_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, "var/outbox", "var/case-units/fjordvik")
    assert main(["config", "check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    outbox, unit = _line(config, "outbox ="), _line(config, "Tildelingskontoret")
    assert (
        f"problem: {config}:{outbox}: hub.outbox: {tmp_path / 'var' / 'outbox'} lies inside state_dir "
        f"{tmp_path / 'var'}, which stays 0700, so group '{GROUP}' cannot reach it; give it a directory "
        "outside state_dir" in out
    )
    # the case unit's (and its default destination's, the same directory) once, with the municipality
    assert out.count("case-units/fjordvik lies inside state_dir") == 1
    assert f'{config}:{unit}: municipality[0].case_unit.path (in municipality "Fjordvik kommune"): ' in out
    assert "2 problem(s)" in out


def test_a_default_directory_inside_the_state_directory_says_it_is_the_default(tmp_path: Path) -> None:
    config = _config(tmp_path, "hub/outbox", "case-units/fjordvik")
    text = config.read_text(encoding="utf-8").replace('outbox = "hub/outbox"\n', "")
    config.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigProblems) as exc:
        load(config)
    [problem] = exc.value.problems
    assert (problem.key, problem.line) == ("hub.outbox", _line(config, "[hub]"))
    assert problem.message.startswith(f"the default, {tmp_path / 'var' / 'outbox'}, lies inside state_dir")


def test_group_directories_outside_the_state_directory_are_fine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, "hub/outbox", "case-units/fjordvik")
    assert main(["config", "check", "--config", str(config)]) == 0
    assert "OK" in capsys.readouterr().out


def test_run_refuses_a_group_directory_inside_the_state_directory(tmp_path: Path) -> None:
    config = _config(tmp_path, "var/outbox", "case-units/fjordvik")
    result = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"hub.outbox (line {_line(config, 'outbox =')}): " in result.stderr
    assert "lies inside state_dir" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "var" / "pfhjem-msg.sqlite3").exists(), "the daemon started"


def test_a_group_that_does_not_exist_is_a_problem_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, "hub/outbox", "case-units/fjordvik", group=NO_GROUP)
    assert main(["config", "check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    hub, unit = _line(config, f'group = "{NO_GROUP}"'), _line(config, "Tildelingskontoret")
    message = f"there is no Unix group '{NO_GROUP}'; create it (groupadd) or correct it"
    assert f"{config}:{hub}: hub.group: {message}" in out
    assert (
        f'{config}:{unit}: municipality[0].case_unit.group (in municipality "Fjordvik kommune"): {message}'
        in out
    )


@pytest.mark.parametrize(
    ("edit", "key", "fragment"),
    [
        (("hub/outbox", "var/outbox"), "hub.outbox", "outbox ="),
        ((f'group = "{GROUP}"', f'group = "{NO_GROUP}"'), "hub.group", f'group = "{NO_GROUP}"'),
    ],
    ids=["inside-state-dir", "no-such-group"],
)
def test_a_reload_rejects_it_and_keeps_the_running_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: tuple[str, str], key: str, fragment: str
) -> None:
    """Given relative to the working directory, the file is still the one reloaded (and logged
    with its absolute path) after the working directory changed."""
    config = _config(tmp_path, "hub/outbox", "case-units/fjordvik")
    monkeypatch.chdir(tmp_path)
    daemon = Daemon(load(Path("config.toml")))
    try:
        running = daemon.settings
        assert running.path == config and running.path.is_absolute()
        monkeypatch.chdir(ROOT)
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace(*edit, 1), encoding="utf-8")
        with capture_logs() as logs:
            assert daemon.reload() is False
        [rejected] = [x for x in logs if x["event"] == "daemon.reload_rejected"]
        assert rejected["config"] == str(config)
        assert [p.split(":")[0] for p in rejected["problems"]] == [f"{key} (line {_line(config, fragment)})"]
        assert daemon.settings is running

        config.write_text(text.replace('"hub/outbox"', '"hub/outbox2"'), encoding="utf-8")
        with capture_logs() as logs:
            assert daemon.reload() is True
        [reloaded] = [x for x in logs if x["event"] == "daemon.reloaded"]
        assert (
            reloaded["config"] == str(config) and daemon.settings.hub_outbox == tmp_path / "hub" / "outbox2"
        )
    finally:
        daemon.close()
