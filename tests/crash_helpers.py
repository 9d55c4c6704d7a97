"""What the crash tests share: messages with fresh MsgIds, the hub's ways of handing them over,
starting a real daemon process, and counting what came out of it."""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from lxml import etree

from tests.conftest import ROOT, SAMPLES

SEEDS = ["dlg11-marked-tema.xml", "dlg11-unmarked.xml", "epi12-marked-msgdescr.xml", "dlg10-notat-unmarked.xml",
         "dlg11-marked-attachment.xml", "epi12-unmarked.xml"]  # fmt: skip


def make_messages(count: int, rng: random.Random) -> list[tuple[str, bytes]]:
    """(MsgId, bytes) of ``count`` copies of the samples, each with a MsgId of its own."""
    seeds = [(SAMPLES / name).read_bytes() for name in SEEDS]
    out = []
    for i in range(count):
        seed = seeds[i % len(seeds)]
        old = etree.fromstring(seed).findtext("{*}MsgInfo/{*}MsgId") or etree.fromstring(seed).findtext(
            "{*}MsgId"
        )
        new = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        out.append((new, seed.replace(old.encode(), new.encode())))  # type: ignore[union-attr]
    return out


def mime_mail(msg_id: str, data: bytes) -> bytes:
    body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (
        b"From: hub@fjordvik.example\r\nTo: pfhjem@fjordvik.example\r\nSubject: "
        + msg_id.encode()
        + b"\r\nMIME-Version: 1.0\r\nContent-Type: application/xml\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + body
    )


def hand_over(inbox: Path, number: int, msg_id: str, data: bytes) -> None:
    """Into the spool as the hub writes: a temporary name, then renamed into place."""
    temp = inbox / f".{number:05d}.tmp"
    temp.write_bytes(data)
    os.replace(temp, inbox / f"{number:05d}-{msg_id}.xml")


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start a daemon and wait until it serves (kills are only meaningful mid-work)."""
    before = log.read_bytes().count(b"daemon.started") if log.exists() else 0
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pfhjem_msg", "run", "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
    deadline = time.time() + 30
    while log.read_bytes().count(b"daemon.started") <= before and time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the daemon exited with {proc.returncode}: {log.read_bytes()[-2000:]!r}")
        time.sleep(0.02)
    return proc


def spool_left(inbox: Path) -> list[str]:
    """What the daemons did not take: files in the spool and in ``.claimed``."""
    waiting = [p.name for p in inbox.iterdir() if not p.name.startswith(".")]
    claimed = inbox / ".claimed"
    return waiting + ([f".claimed/{p.name}" for p in claimed.iterdir()] if claimed.exists() else [])


def apprecs_by_original(outbox: Path) -> Counter[str | None]:
    """AppRec files in the hub outbox, counted by the MsgId they answer."""
    return Counter(
        etree.parse(str(p)).findtext("{*}OriginalMsgId/{*}Id") for p in outbox.glob("apprec-*.xml")
    )


def case_unit_files(units: Path) -> list[Path]:
    return [p for unit in units.iterdir() for p in unit.iterdir()]
