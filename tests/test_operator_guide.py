"""The operator guide and the unit agree: an operator who copies the README's install steps gets
the paths the unit runs, and no step names a wheel version that is not the one being built."""

from __future__ import annotations

import re
import shlex

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
UNIT = (ROOT / "config" / "pfhjem-msg.service").read_text(encoding="utf-8")


def _install_block() -> str:
    guide = README.split("### Installing it as a service", 1)[1]
    return guide.split("```sh", 1)[1].split("```", 1)[0]


def _unit_key(key: str) -> str:
    found = re.search(rf"^{key}=(.*)$", UNIT, re.MULTILINE)
    assert found is not None, f"the unit has no {key}="
    return found.group(1).strip()


def test_the_readme_installs_where_the_unit_runs() -> None:
    argv = shlex.split(_unit_key("ExecStart"))
    program, config = argv[0], argv[argv.index("--config") + 1]
    venv = program.removesuffix("/bin/pfhjem-msg")
    block = _install_block()
    assert f"python3 -m venv {venv}" in block and f"{venv}/bin/pip install" in block
    assert f"{program} config check --config {config}" in block
    assert f"{config}" in block.split("install -m 0640", 1)[1]
    state = "/var/lib/" + _unit_key("StateDirectory")
    assert f'`state_dir = "{state}"`' in README and f"--home-dir {state}" in block
    # the unit's own comment gives the same steps
    for step in (f"python3 -m venv {venv}", f"config check --config {config}", "systemd-analyze verify"):
        assert step in UNIT, step


def test_no_install_step_names_a_wheel_version() -> None:
    """A version written into the steps goes stale with the next release; the glob does not."""
    for text in (_install_block(), UNIT):
        wheels = re.findall(r"pfhjem_msg-(\S+?)-py3-none-any\.whl", text)
        assert wheels and all(not re.match(r"\d", v) for v in wheels), wheels
