"""Operator commands on a store holding a million messages.

Builds a store with N messages (default 1,000,000: states as in a year of real use, 0.1 %
failed, some held, three events and two deliveries each), then times, as whole commands
(process start-up included, as an operator meets them): ``messages list --state failed``,
``messages show ID``, ``status``; and, in the same run, ``pfhjem-msg --version`` as the
baseline cost of starting the program. Prints JSON; the bar is under one second each.

    python benchmarks/ops_scale.py [--messages 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pfhjem_msg.store.sqlite import SqliteStore  # noqa: E402

CONFIG = """
state_dir = "var"
[[municipality]]
name = "Fjordvik kommune"
her_ids = ["8300001", "8300010"]
case_unit = { her_id = "8300010", name = "Tildelingskontoret", transport = "dir", path = "var/cu" }
"""


def build(directory: Path, count: int, seed: int = 1) -> int:
    """Fill a store; returns the id of a failed message to show."""
    rng = random.Random(seed)
    store = SqliteStore(directory / "var" / "pfhjem-msg.sqlite3")
    db = store._db
    db.execute("PRAGMA synchronous=OFF")  # building the fixture only; the product never does this
    start = datetime(2025, 11, 1, tzinfo=UTC)
    step = timedelta(days=365) / count
    db.execute("BEGIN")
    failed_id = 0
    batch_raw, batch_msg, batch_ev, batch_del = [], [], [], []
    for i in range(1, count + 1):
        at = (start + step * i).isoformat(timespec="microseconds")
        roll = rng.random()
        state = (
            "failed" if roll < 0.001 else "held" if roll < 0.0015 else "rejected" if roll < 0.01 else "done"
        )
        failed_id = i if state == "failed" and not failed_id else failed_id
        batch_raw.append((i, f"{i:064x}", 64, b"<MsgHead/>"))
        batch_msg.append((i, i, at, "spool:m.xml", state, "routed", f"5f0c{i:08x}-6b1d-4c8e-9a2f-7d3e1b0a0001",
                          "DIALOG_HELSEFAGLIG", "8100020", "8300010", i % 2, at))  # fmt: skip
        for to in ("received", "routed", state):
            batch_ev.append((i, at, "daemon", None, to, "benchmark"))
        for kind in ("apprec", "case_unit"):
            status = "failed" if state == "failed" and kind == "case_unit" else "delivered"
            batch_del.append((i, kind, "hub", f"{kind}-{i}.xml", b"<x/>", status, at, at))
        if len(batch_msg) >= 20000 or i == count:
            db.executemany("INSERT INTO raw(id, sha256, size, bytes) VALUES (?,?,?,?)", batch_raw)
            db.executemany(
                "INSERT INTO messages(id, raw_id, received_at, source, state, state_reason, msg_id, msg_type, "
                "sender_her, receiver_her, marked, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                batch_msg,
            )
            db.executemany(
                "INSERT INTO events(message_id, at, actor, from_state, to_state, reason) VALUES (?,?,?,?,?,?)",
                batch_ev,
            )
            db.executemany(
                "INSERT INTO deliveries(message_id, kind, transport, filename, payload, status, delivered_at, "
                "created_at) VALUES (?,?,?,?,?,?,?,?)",
                batch_del,
            )
            batch_raw, batch_msg, batch_ev, batch_del = [], [], [], []
    db.execute("COMMIT")
    db.execute("ANALYZE")
    store.close()
    return failed_id


def reuse_failed(directory: Path) -> int:
    """A store kept from an earlier run (``--keep``): the first failed message in it."""
    store = SqliteStore(directory / "var" / "pfhjem-msg.sqlite3")
    row = store._db.execute("SELECT id FROM messages WHERE state = 'failed' ORDER BY id LIMIT 1").fetchone()
    store.close()
    return int(row[0])


def timed(*args: str, config: Path) -> tuple[float, int]:
    """The best of three runs of a whole command."""
    best = None
    code = 0
    for _ in range(3):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pfhjem_msg", *args, "--config", str(config)],
                              capture_output=True, cwd=ROOT)  # fmt: skip
        elapsed = time.perf_counter() - start
        code = proc.returncode
        if code not in (0, 1):
            raise SystemExit(proc.stderr.decode("utf-8", "replace"))
        best = elapsed if best is None else min(best, elapsed)
    assert best is not None
    return best, code


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--keep", metavar="DIR", help="build the store here and keep it")
    args = ap.parse_args()
    directory = Path(args.keep) if args.keep else Path(tempfile.mkdtemp())
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    started = time.perf_counter()
    reuse = (directory / "var" / "pfhjem-msg.sqlite3").exists() and args.keep
    failed_id = reuse_failed(directory) if reuse else build(directory, args.messages)
    build_seconds = time.perf_counter() - started
    baseline, _ = timed("--version", config=config)
    results = {}
    for name, command in (
        ("list_failed", ("messages", "list", "--state", "failed", "--json")),
        ("show", ("messages", "show", str(failed_id), "--json")),
        ("status", ("status", "--json")),
    ):
        seconds, _ = timed(*command, config=config)
        results[name] = {"seconds": round(seconds, 3), "ratio_to_startup": round(seconds / baseline, 2)}
    size = sum(p.stat().st_size for p in (directory / "var").iterdir())
    out = {
        "messages": args.messages,
        "store_mb": round(size / 1e6, 1),
        "build_seconds": round(build_seconds, 1),
        "baseline_startup_seconds": round(baseline, 3),
        **results,
        "bar_seconds": 1.0,
    }
    print(json.dumps(out, indent=2))
    return 0 if all(r["seconds"] < 1.0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
