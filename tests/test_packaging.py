"""What an install relies on: the version in one place, the schemas inside the package, a
unit file systemd accepts. (Building the wheel and running it from a fresh virtual
environment outside the checkout is ``.ci/wheel``, which CI runs after the tests.)"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import pfhjem_msg
from pfhjem_msg.kith.schemas import default_schema_dir
from tests.conftest import ROOT

UNIT = ROOT / "config" / "pfhjem-msg.service"


def test_version_is_single_sourced() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version("pfhjem-msg") == pfhjem_msg.__version__
    shown = subprocess.run([sys.executable, "-m", "pfhjem_msg", "--version"], capture_output=True, text=True)
    assert shown.stdout.strip() == f"pfhjem-msg {pfhjem_msg.__version__}"


def test_default_schemas_are_found_inside_the_package() -> None:
    directory = default_schema_dir()
    assert directory.resolve().parent == Path(pfhjem_msg.__file__).resolve().parent
    assert len(list(directory.glob("*.xsd"))) >= 10
    assert not (ROOT / "xsd").exists(), "schemas outside the package do not reach a wheel"


def test_package_data_ships_the_schemas_and_not_their_sources() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert "xsd/*.xsd" in setuptools["package-data"]["pfhjem_msg"]
    assert "xsd/src/*" in setuptools["exclude-package-data"]["pfhjem_msg"]


def _unit() -> dict[str, str]:
    keys: dict[str, str] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys[key.strip()] = value.strip()
    return keys


def test_unit_reloads_by_sighup_notifies_and_has_a_watchdog() -> None:
    unit = _unit()
    assert unit["Type"] == "notify"
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"  # SIGTERM would stop the service
    assert 30 <= int(unit["WatchdogSec"]) <= 300
    assert int(unit["LimitNOFILE"]) >= 4096
    assert unit["UMask"] == "0077" and unit["StateDirectoryMode"] == "0700"
    assert unit["ExecStart"].startswith("/opt/pfhjem-msg/.venv/bin/pfhjem-msg run ")


def test_systemd_accepts_every_key_of_the_unit() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    result = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True)
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        # The program is installed by the operator, not here.
        if line.strip() and "/opt/pfhjem-msg/.venv/bin/pfhjem-msg is not executable" not in line
    ]
    assert complaints == []
