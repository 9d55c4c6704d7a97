"""`config check` refuses a group-readable directory inside the state directory: the state
directory stays 0700, so the hub or a case unit's group could never reach the files there,
and nothing else would say so until someone asked why nothing arrived."""

from __future__ import annotations

import grp
import os
from pathlib import Path

import pytest

from pfhjem_msg.cli import main
from tests.conftest import write_config

GROUP = grp.getgrgid(os.getgid()).gr_name  # a group that exists here


def _config(tmp_path: Path, outbox: str, case_unit_path: str) -> Path:
    config = write_config(tmp_path)
    text = config.read_text(encoding="utf-8")
    text = text.replace('outbox = "var/outbox"', f'outbox = "{outbox}"\ngroup = "{GROUP}"')
    text = text.replace('path = "var/case-units/fjordvik"', f'path = "{case_unit_path}", group = "{GROUP}"')
    config.write_text(text, encoding="utf-8")
    return config


def test_group_directories_inside_the_state_directory_are_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, "var/outbox", "var/case-units/fjordvik")
    assert main(["config", "check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert (
        f"hub.outbox: {tmp_path / 'var' / 'outbox'} lies inside state_dir {tmp_path / 'var'}, which stays 0700"
        in out
    )
    assert f"group '{GROUP}' cannot reach it; move it outside state_dir" in out
    # the case unit's (and its default destination, the same directory) once, with the municipality
    assert out.count("case-units/fjordvik lies inside state_dir") == 1
    assert 'municipality[0].case_unit.path (in municipality "Fjordvik kommune")' in out
    assert "2 problem(s)" in out


def test_group_directories_outside_the_state_directory_are_fine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, "hub/outbox", "case-units/fjordvik")
    assert main(["config", "check", "--config", str(config)]) == 0
    assert "OK" in capsys.readouterr().out
