"""`config check` and `config show` as an operator runs them: real subprocesses, exit codes,
and secrets that never reach the screen."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pfhjem_msg.config import load

from .conftest import ROOT, write_config


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pfhjem_msg", *args], capture_output=True, text=True, cwd=ROOT, env=env
    )


def test_check_is_ok_for_a_good_file(tmp_path: Path) -> None:
    result = run("config", "check", "--config", str(write_config(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK; municipalities: Fjordvik kommune, Åsli kommune" in result.stdout


def test_check_exits_1_on_a_misspelt_key_and_names_it(tmp_path: Path) -> None:
    """The issue's example: `paylod_days` passed as OK while retention was off."""
    config = write_config(tmp_path, extra="[retention]\npaylod_days = 180\n")
    line = config.read_text(encoding="utf-8").splitlines().index("paylod_days = 180") + 1
    result = run("config", "check", "--config", str(config))
    assert result.returncode == 1
    assert f"{config}:{line}: retention.paylod_days: unknown key; did you mean payload_days?" in result.stdout
    assert "OK" not in result.stdout and "1 problem(s)" in result.stdout


def test_check_exits_1_for_text_that_is_not_toml_and_for_a_broken_schema_dir(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[kith\n", encoding="utf-8")
    assert run("config", "check", "--config", str(broken)).returncode == 1
    schemas = tmp_path / "xsd"
    schemas.mkdir()
    (schemas / "a.xsd").write_text("not a schema", encoding="utf-8")
    result = run(
        "config", "check", "--config", str(write_config(tmp_path, extra='[kith]\nschemas = "xsd"\n'))
    )
    assert result.returncode == 1 and "kith.schemas" in result.stdout


def test_check_of_a_file_that_is_not_there_is_a_usage_error(tmp_path: Path) -> None:
    result = run("config", "check", "--config", str(tmp_path / "nowhere.toml"))
    assert result.returncode == 2 and "cannot read configuration" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def secret_config(tmp_path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "signing.key").write_bytes(pem)
    (tmp_path / "signing.crt").write_bytes(pem.replace(b"PRIVATE KEY", b"CERTIFICATE"))
    return write_config(
        tmp_path,
        extra='[signing]\nkey = "signing.key"\ncert = "signing.crt"\n'
        '[smtp]\nusername = "pfhjem"\npassword = "literal-Passw0rd-in-file"\n',
    )


def test_show_masks_the_password_and_never_prints_key_material(secret_config: Path) -> None:
    material = (secret_config.parent / "signing.key").read_text(encoding="utf-8").splitlines()[1:-1]
    for args in ((), ("--json",)):
        result = run("config", "show", "--config", str(secret_config), *args)
        assert result.returncode == 0, result.stderr
        assert "literal-Passw0rd-in-file" not in result.stdout and "********" in result.stdout
        assert str(secret_config.parent / "signing.key") in result.stdout  # the path is fine
        assert not any(line in result.stdout for line in material)


def test_show_names_an_environment_secret_but_not_its_value(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra='[smtp]\npassword = "env:PFHJEM_TEST_PW"\n')
    env = {"PATH": "/usr/bin:/bin", "PFHJEM_TEST_PW": "value-from-the-environment"}
    result = run("config", "show", "--config", str(config), "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["smtp"]["password"] == "env:PFHJEM_TEST_PW"
    assert "value-from-the-environment" not in result.stdout
    unset = run("config", "show", "--config", str(config), env={"PATH": "/usr/bin:/bin"})
    assert unset.returncode == 1 and "PFHJEM_TEST_PW, which is not set" in unset.stderr and not unset.stdout


def test_show_fills_in_the_defaults_and_its_text_loads_to_the_same_settings(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra="[intake.smtp]\nport = 0\n")
    data = json.loads(run("config", "show", "--config", str(config), "--json").stdout)
    assert data["retry"]["factor"] == 2.0 and data["daemon"]["workers"] == 1
    assert data["intake"]["smtp"]["max_message_bytes"] == data["kith"]["max_bytes"]
    assert data["municipality"][1]["default"]["name"] == "Tjenestekontoret"
    text = run("config", "show", "--config", str(config)).stdout
    shown = tmp_path / "elsewhere" / "shown.toml"
    shown.parent.mkdir()
    shown.write_text(text, encoding="utf-8")
    original, again = load(config), load(shown)
    assert (again.path, again.raw) != (original.path, original.raw)
    again.path, again.raw = original.path, original.raw
    assert again == original
