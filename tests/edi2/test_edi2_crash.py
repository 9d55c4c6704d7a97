"""The crash test on EDI 2.0: the fake message service holds N messages while a real daemon
is killed with SIGKILL at random moments and restarted until everything is settled.
Afterwards every message is processed once, every AppRec is posted exactly once (counted by
the fake), and everything is marked read.

CI runs it small with a fixed seed. By hand, bigger:
``PFHJEM_EDI2_CRASH_MESSAGES=300 PFHJEM_EDI2_CRASH_SEED=7 pytest tests/edi2/test_edi2_crash.py -s``
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from pfhjem_msg.store.sqlite import SqliteStore
from tests.conftest import ROOT
from tests.edi2.conftest import ClientKey
from tests.edi2.test_daemon_edi2 import HOSPITAL, US, edi2_config
from tests.edi2_fake import FakeService
from tests.test_crash import make_messages, start

MESSAGES = int(os.environ.get("PFHJEM_EDI2_CRASH_MESSAGES", "40"))
SEED = int(os.environ.get("PFHJEM_EDI2_CRASH_SEED", "20261129"))
MIN_KILLS = 6
MAX_KILLS = 40


def settled(fake: FakeService, ids: list[str]) -> bool:
    with fake.lock:
        return all(fake.inbound[i].read for i in ids)


def test_sigkill_during_edi2_intake_posts_every_apprec_once(
    tmp_path: Path, fake: FakeService, client_key: ClientKey
) -> None:
    rng = random.Random(SEED)
    config = edi2_config(
        tmp_path, fake, client_key, extra="[retry]\npipeline_attempts = 20\nbase_seconds = 0.05\n"
    )
    messages = make_messages(MESSAGES, rng)
    ids = [fake.add_inbound(data, US, HOSPITAL) for _, data in messages]
    log = tmp_path / "daemon.log"
    daemon = start(config, log)
    kills = 0
    while (not settled(fake, ids) and kills < MAX_KILLS) or kills < MIN_KILLS:
        time.sleep(rng.uniform(0.05, 0.6))
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        kills += 1
        daemon = start(config, log)
    deadline = time.time() + 60
    while not settled(fake, ids) and time.time() < deadline:
        time.sleep(0.1)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0
    drain = subprocess.run([sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
                           capture_output=True, cwd=ROOT)  # fmt: skip
    assert drain.returncode == 0, drain.stderr[-2000:]

    assert fake.problems == []
    assert settled(fake, ids), "a message was left unread at the service"
    posts = Counter(m for m, _, _ in fake.apprec_posts)
    assert posts == Counter(ids), "an AppRec is missing or posted twice"
    assert all(body["appRecStatus"] == "Ok" for _, _, body in fake.apprec_posts)

    store = SqliteStore(tmp_path / "var" / "pfhjem-msg.sqlite3")
    try:
        counts = store.counts()
        rows = [store.message(i) for i in range(1, sum(counts.values()) + 1)]
        links = [store.edi2_links(i) for i in range(1, len(rows) + 1)]
    finally:
        store.close()
    assert counts == {"done": MESSAGES}, counts
    assert Counter(r.msg_id for r in rows if r) == Counter(m for m, _ in messages)
    assert sorted(link.service_id for each in links for link in each) == sorted(ids)
    assert all(link.apprec == "posted" and link.read_at for each in links for link in each)
    assert not list((tmp_path / "var" / "outbox").glob("*.xml"))
    print(f"\nEDI 2.0 crash test: {MESSAGES} messages, {kills} SIGKILLs, seed {SEED}: each processed once, "
          "each AppRec posted once")  # fmt: skip
