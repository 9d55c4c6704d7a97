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


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["messages", "list", "--limit", "-1"], "usage: pfhjem-msg messages list "),
        (["messages", "replay", "--state", "failed", "--limit", "-5"], "usage: pfhjem-msg messages replay "),
        (["audit", "--limit", "many"], "usage: pfhjem-msg audit "),
    ],
)
def test_a_negative_limit_is_refused_with_the_commands_usage(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """SQLite read ``LIMIT -1`` as no limit, PostgreSQL refuses it: refused on both, before
    the store is opened."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.startswith(usage)
    assert f"argument --limit: {argv[-1]!r} is not a count: give a whole number, 0 or more" in err
