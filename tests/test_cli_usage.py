"""An option the command does not have is reported with that command's usage, so the operator
sees which options exist there, not the top level's list of commands."""

from __future__ import annotations

import pytest

from pfhjem_msg.cli import main


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["messages", "list", "--municipality", "Oslo"], "usage: pfhjem-msg messages list "),
        (["config", "check", "--bogus"], "usage: pfhjem-msg config check "),
        (["followups", "list", "--state", "open"], "usage: pfhjem-msg followups list "),
    ],
)
def test_an_unknown_option_names_the_command_and_shows_its_usage(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.startswith(usage)
    command = usage.removeprefix("usage: ").strip()
    assert f"{command}: error: unrecognized arguments: {' '.join(argv[len(command.split()) - 1 :])}" in err
