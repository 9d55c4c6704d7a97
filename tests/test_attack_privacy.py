"""A national id hidden where the product quotes the sender's text as if it were a code or a
name: the type code, element names, MsgId, a HER-id. Checked on verdicts and on a real
``pfhjem-msg run --once`` with its log, ``messages list`` and ``messages show``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pfhjem_msg.kith.verdict import Options, examine
from tests.conftest import ROOT, SAMPLES, write_config

PATIENT_ID = "14835841481"
"""The test patient's national id in the samples."""
BASE = (SAMPLES / "dlg11-marked-tema.xml").read_text(encoding="utf-8")
ID_IN_TYPE = BASE.replace('V="DIALOG_HELSEFAGLIG"', f'V="X{PATIENT_ID}"').encode()
ID_IN_ELEMENT = BASE.replace("<MIGversion>", f"<X{PATIENT_ID}/><MIGversion>").encode()
ID_IN_MSGID = re.sub(r"<MsgId>[^<]*</MsgId>", f"<MsgId>X{PATIENT_ID}</MsgId>", BASE).encode()
ID_IN_HER_ID = BASE.replace("<Id>8100020</Id>", f"<Id>X{PATIENT_ID}</Id>").encode()


def _cli(config: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "pfhjem_msg", *args, "--config", str(config)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    return result.stdout + result.stderr


def _everything_shown(tmp_path: Path, data: bytes) -> str:
    """What a real run --once logs and what an operator's listing and view show."""
    config = write_config(tmp_path)
    (tmp_path / "var" / "inbox" / "m.xml").write_bytes(data)
    out = _cli(config, "run", "--once")
    assert "daemon.once_done" in out, "the run finished"
    return out + _cli(config, "messages", "list") + _cli(config, "messages", "show", "1")


def test_attack_national_id_in_the_message_type_code() -> None:
    verdict = examine(ID_IN_TYPE, "m", Options())
    assert "MSG_TYPE_UNKNOWN" in {i.code for i in verdict.issues}
    assert PATIENT_ID not in repr(verdict.as_dict())
    assert verdict.message is not None and verdict.message.msg_type is not None
    assert PATIENT_ID in verdict.message.msg_type.value, "the model keeps what was sent"


def test_attack_national_id_in_the_message_type_code_through_the_daemon(tmp_path: Path) -> None:
    shown = _everything_shown(tmp_path, ID_IN_TYPE)
    assert "(not a code)" in shown
    assert PATIENT_ID not in shown


def test_attack_national_id_in_an_element_name() -> None:
    verdict = examine(ID_IN_ELEMENT, "m", Options())
    assert verdict.issues, "the unknown element is reported"
    assert PATIENT_ID not in repr([(i.message, i.path) for i in verdict.issues])


@pytest.mark.parametrize("data", [ID_IN_MSGID, ID_IN_HER_ID], ids=["msgid", "her_id"])
def test_attack_national_id_as_msgid_or_sender_her_id_in_messages_list(tmp_path: Path, data: bytes) -> None:
    assert PATIENT_ID not in _everything_shown(tmp_path, data)
