"""`config show` masks secrets, and its text output is otherwise a configuration file. Reused as
one (`config show > file`), it must not run with the mask as the password: the loader refuses
a secret that is the mask, at its line, saying to put the real one back; with the secrets put
back it loads to the same settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pfhjem_msg.config import MASK, ConfigProblems, load
from pfhjem_msg.store.url import MASK as URL_MASK

from .conftest import ROOT, write_config

PASSWORD = "literal-Passw0rd-in-file"
DB_PASSWORD = "db-Passw0rd-in-url"
SECRETS = f"""
[smtp]
username = "pfhjem"
password = "{PASSWORD}"
[store]
url = "postgresql://pfhjem:{DB_PASSWORD}@db.example.no:5432/pfhjem_msg"
[intake.edi2]
base_url = "https://msh.example.no"
[edi2.helseid]
token_url = "https://helseid.example.no/connect/token"
client_id = "pfhjem-client"
scope = "nhn:msh/api"
private_key = "helseid-key.json"
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pfhjem_msg", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=60)  # fmt: skip


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "helseid-key.json").write_text("{}", encoding="utf-8")  # only its path is read here
    return write_config(tmp_path, extra=SECRETS)


def _line(text: str, fragment: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if fragment in line)


def test_the_output_of_show_does_not_load_until_the_secrets_are_put_back(
    config: Path, tmp_path: Path
) -> None:
    assert MASK == URL_MASK  # one mask, refused wherever config show writes it
    shown = run("config", "show", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    assert PASSWORD not in shown.stdout and DB_PASSWORD not in shown.stdout
    copy = tmp_path / "elsewhere" / "shown.toml"
    copy.parent.mkdir()
    copy.write_text(shown.stdout, encoding="utf-8")

    check = run("config", "check", "--config", str(copy))
    assert check.returncode == 1, check.stdout + check.stderr
    text = shown.stdout
    problems = [line for line in check.stdout.splitlines() if line.startswith("problem: ")]
    where = {p.split(": ")[2]: p.split(": ")[1] for p in problems}
    assert where == {
        "smtp.password": f"{copy}:{_line(text, 'password = ')}",
        "store.url": f"{copy}:{_line(text, 'postgresql://')}",
        "edi2.helseid.private_key": f"{copy}:{_line(text, 'private_key = ')}",
    }, check.stdout
    assert all("the mask `config show` prints in place of the secret" in p for p in problems)
    put_back = {p.split(": ")[2]: p.split("put the real ")[1].split(" back")[0] for p in problems}
    assert put_back == {"smtp.password": "password", "store.url": "password",
                        "edi2.helseid.private_key": "path of the key file"}  # fmt: skip
    assert "3 problem(s)" in check.stdout and PASSWORD not in check.stdout

    # each masked line says so, and with the secrets put back the file runs as the original
    masked = [line for line in text.splitlines() if MASK in line]
    assert len(masked) == 3 and all(line.endswith("put the real secret back before loading this as a "
                                                  "configuration") for line in masked)  # fmt: skip
    restored = (
        text.replace(f'"{MASK}"', f'"{PASSWORD}"', 1)
        .replace(f":{MASK}@", f":{DB_PASSWORD}@")
        .replace(f'private_key = "{MASK}"', f'private_key = "{config.parent / "helseid-key.json"}"')
    )
    copy.write_text(restored, encoding="utf-8")
    assert run("config", "check", "--config", str(copy)).returncode == 0
    original, again = load(config), load(copy)
    again.path, again.raw = original.path, original.raw
    assert again == original and again.store_url == original.store_url


def test_an_environment_secret_is_shown_as_its_reference_and_loads_back_as_is(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra='[smtp]\npassword = "env:PFHJEM_TEST_PW"\n')
    env = {**os.environ, "PFHJEM_TEST_PW": "value-from-the-environment"}
    shown = run("config", "show", "--config", str(config), env=env)
    assert shown.returncode == 0 and MASK not in shown.stdout
    copy = tmp_path / "shown.toml"
    copy.write_text(shown.stdout, encoding="utf-8")
    assert run("config", "check", "--config", str(copy), env=env).returncode == 0


def test_a_password_in_the_store_urls_query_is_refused_so_it_is_never_shown(tmp_path: Path) -> None:
    """`config show`, errors and logs mask the password before the host only."""
    url = f"postgresql://pfhjem@db.example.no/pfhjem_msg?sslmode=require&password={DB_PASSWORD}"
    config = write_config(tmp_path, extra=f'[store]\nurl = "{url}"\n')
    with pytest.raises(ConfigProblems) as exc:
        load(config)
    [problem] = exc.value.problems
    text = config.read_text(encoding="utf-8")
    assert (problem.key, problem.line) == ("store.url", _line(text, "url = "))
    assert "must not carry the password as ?password=" in problem.message and "PGPASSWORD" in problem.message
    shown = run("config", "show", "--config", str(config))
    assert shown.returncode == 1 and DB_PASSWORD not in shown.stdout + shown.stderr
