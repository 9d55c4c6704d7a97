"""The crash test: 500 messages stream in through the spool and SMTP while the daemon is
killed with SIGKILL at random moments and restarted. Afterwards every message the hub handed
over is in its final state, every AppRec is in the outbox exactly once, and no GP copy or
case-unit copy is doubled.

CI runs it with a fixed seed. By hand, bigger:
``PFHJEM_CRASH_MESSAGES=3000 PFHJEM_CRASH_SEED=7 PFHJEM_CRASH_FEED_SECONDS=30 pytest tests/test_crash.py -s``
"""

from __future__ import annotations

import os
import random
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from pfhjem_msg.store.sqlite import SqliteStore
from tests.conftest import ROOT, free_port, write_config
from tests.crash_helpers import (
    apprecs_by_original,
    case_unit_files,
    hand_over,
    make_messages,
    mime_mail,
    spool_left,
    start,
)

MESSAGES = int(os.environ.get("PFHJEM_CRASH_MESSAGES", "500"))
SEED = int(os.environ.get("PFHJEM_CRASH_SEED", "20261122"))
FEED_SECONDS = float(os.environ.get("PFHJEM_CRASH_FEED_SECONDS", "8"))
"""How long the hub takes to hand over all messages: the daemon is killed throughout."""
MIN_KILLS = 5


def test_sigkill_mid_stream_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    port = free_port()
    # The kills here are ours, not the messages' fault. The guard against a message that crashes the
    # daemon (failed after [retry] pipeline_attempts) would otherwise trip on an innocent message
    # that a slow, loaded machine happens to have in hand at three kills in a row.
    config = write_config(
        tmp_path, smtp_intake_port=port, workers=2, extra="[retry]\npipeline_attempts = 20\n"
    )
    inbox = tmp_path / "var" / "inbox"
    log = tmp_path / "daemon.log"
    messages = make_messages(MESSAGES, rng)
    by_spool = messages[: MESSAGES // 2]
    by_smtp = messages[MESSAGES // 2 :]
    accepted_smtp: set[str] = set()
    feeding_done = threading.Event()

    def feed_spool() -> None:
        for i, (msg_id, data) in enumerate(by_spool):
            hand_over(inbox, i, msg_id, data)
            time.sleep(FEED_SECONDS / len(by_spool))

    def feed_smtp() -> None:
        pending = list(by_smtp)
        deadline = time.time() + 240
        while pending and time.time() < deadline:
            msg_id, data = pending[0]
            mail = mime_mail(msg_id, data)
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                    client.sendmail("hub@fjordvik.example", ["pfhjem@fjordvik.example"], mail)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)  # the daemon is down: a hub tries again
                continue
            accepted_smtp.add(msg_id)
            pending.pop(0)
            time.sleep(FEED_SECONDS / len(by_smtp))

    feeders = [threading.Thread(target=feed_spool), threading.Thread(target=feed_smtp)]
    daemon = start(config, log)
    for t in feeders:
        t.start()
    kills = 0
    while (any(t.is_alive() for t in feeders) and kills < 40) or kills < MIN_KILLS:
        time.sleep(rng.uniform(0.1, 0.8))
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        kills += 1
        daemon = start(config, log)
    for t in feeders:
        t.join()
    feeding_done.set()
    time.sleep(1.0)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0
    drain = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                           capture_output=True, cwd=ROOT)  # fmt: skip
    assert drain.returncode == 0, drain.stderr[-2000:]

    assert accepted_smtp == {m for m, _ in by_smtp}, "the SMTP feeder gave up on some messages"
    assert spool_left(inbox) == []

    store = SqliteStore(tmp_path / "var" / "pfhjem-msg.sqlite3")
    counts = store.counts()
    ids = []
    stuck = {}
    for message_id in range(1, sum(counts.values()) + 1):
        row = store.message(message_id)
        assert row is not None
        ids.append(row.msg_id)
        if row.state != "done":
            stuck[message_id] = [(e.to_state, e.reason) for e in store.events(message_id)]
    store.close()
    assert counts == {"done": MESSAGES}, (counts, stuck)
    assert Counter(ids) == Counter(m for m, _ in messages)

    outbox = tmp_path / "var" / "outbox"
    originals = apprecs_by_original(outbox)
    assert originals == Counter(m for m, _ in messages), "an AppRec is missing or doubled"
    gp_copies = Counter(p.name.split("-")[1] for p in outbox.glob("gpcopy-*.xml"))
    assert gp_copies and max(gp_copies.values()) == 1, "a GP copy is doubled"
    case_unit = case_unit_files(tmp_path / "var" / "case-units")
    assert len(case_unit) == MESSAGES and len({p.name.split("-", 1)[0] for p in case_unit}) == MESSAGES
    assert kills >= MIN_KILLS
    print(f"\ncrash test: {MESSAGES} messages, {kills} SIGKILLs, seed {SEED}: nothing lost, nothing doubled")
