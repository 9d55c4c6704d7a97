"""End-to-end throughput of the daemon against a bare lxml parse+validate loop.

Writes N generated messages (about 4 KB each, half of them marked «Pakkeforløp hjem») into a
fresh spool, runs ``pfhjem-msg run --once`` on them as a subprocess (every acceptance durable:
SQLite ``synchronous=FULL`` for intake and delivery commits, every delivered file flushed), then reads the store for the
latency from intake to the AppRec written. On the same files, in the same run, it times a bare
lxml parse + XMLSchema.validate loop with the same compiled schemas. Prints JSON; ``ratio`` is
end-to-end speed / bare-loop speed. End to end is the whole command, process start-up (and
the worker processes' schema compilation) included; ``intake_to_last_apprec`` leaves those
out. Exit 1 when the end-to-end rate is under the floor.

    python benchmarks/throughput.py [--messages 2000] [--floor 500]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pfhjem_msg.kith.schemas import load_schema_set  # noqa: E402

SEEDS = ("dlg11-marked-tema.xml", "dlg11-unmarked.xml")
TARGET_BYTES = 4096
FILLER = (
    "<p>Oppfølging av ernæring, fysisk aktivitet og praktisk bistand i hjemmet drøftet med pasienten "
    "og pårørende; kommunen kontakter pasienten etter utskrivning.</p>\n"
)

CONFIG = """
state_dir = "var"
[intake]
spool = "var/inbox"
settle_seconds = 0
[hub]
outbox = "var/outbox"
[gp_registry]
file = "{registry}"
[[municipality]]
name = "Fjordvik kommune"
her_ids = ["8300001", "8300010"]
case_unit = {{ her_id = "8300010", name = "Tildelingskontoret", transport = "dir", path = "var/case-units/fjordvik" }}
"""


def make_messages(directory: Path, count: int) -> list[Path]:
    """Copies of a marked and an unmarked sample, each with a fresh MsgId, padded to ~4 KB."""
    seeds = [(ROOT / "samples" / name).read_bytes() for name in SEEDS]
    files = []
    for i in range(count):
        seed = seeds[i % 2]
        old = etree.fromstring(seed).findtext("{*}MsgInfo/{*}MsgId")
        assert old is not None
        data = seed.replace(old.encode(), str(uuid.uuid4()).encode())
        close = b"</div>"
        filler = FILLER.encode()
        pad = max(0, (TARGET_BYTES - len(data)) // len(filler) + 1)
        data = data.replace(close, filler * pad + close, 1)
        path = directory / f"m{i:06d}.xml"
        path.write_bytes(data)
        files.append(path)
    return files


def bare_loop(files: list[Path]) -> float:
    """Seconds for lxml parse + validate of every file with the product's compiled schemas."""
    schema = load_schema_set().schema
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    start = time.perf_counter()
    ok = 0
    for p in files:
        ok += bool(schema.validate(etree.parse(str(p), parser)))
    elapsed = time.perf_counter() - start
    assert ok == len(files), f"only {ok} of {len(files)} generated messages are valid"
    return elapsed


def disk_probe(directory: Path, count: int = 500) -> float:
    """Files/s this disk takes with a write, fsync and rename each: how far the disk alone
    lets any durable delivery go, measured beside the run."""
    directory.mkdir()
    start = time.perf_counter()
    for i in range(count):
        temp = directory / f".p{i}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        os.write(fd, b"x" * 4096)
        os.fsync(fd)
        os.close(fd)
        os.replace(temp, directory / f"p{i}")
    return count / (time.perf_counter() - start)


def timings(db: Path) -> tuple[list[float], float]:
    """Seconds from each message's acceptance to its AppRec written; and the seconds from the
    first acceptance to the last AppRec (the run without process start-up and shut-down)."""
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT m.received_at, d.delivered_at FROM messages m JOIN deliveries d ON d.message_id = m.id "
        "WHERE d.kind = 'apprec' AND d.delivered_at IS NOT NULL"
    ).fetchall()
    con.close()
    pairs = [(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in rows]
    span = (max(b for _, b in pairs) - min(a for a, _ in pairs)).total_seconds() if pairs else 0.0
    return [(b - a).total_seconds() for a, b in pairs], span


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--floor", type=float, default=500.0, help="messages/s end to end (default 500)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("PFHJEM_BENCH_DIR")) as tmp:
        base = Path(tmp)
        source = base / "generated"
        source.mkdir()
        files = make_messages(source, args.messages)
        bare_seconds = bare_loop(files)
        disk_files_per_s = disk_probe(base / "probe")
        config = base / "config.toml"
        config.write_text(CONFIG.format(registry=ROOT / "config" / "gp-registry.csv"), encoding="utf-8")
        inbox = base / "var" / "inbox"
        inbox.mkdir(parents=True)
        for p in files:
            os.link(p, inbox / p.name)
        os.sync()  # the benchmark's own files on disk first: the daemon is not charged for them
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pfhjem_msg", "run", "--once", "--config", str(config)],
            capture_output=True,
            cwd=ROOT,
        )
        e2e_seconds = time.perf_counter() - start
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr.decode("utf-8", "replace")[-2000:])
            return 2
        outbox = base / "var" / "outbox"
        apprecs = len(list(outbox.glob("apprec-*.xml")))
        gp_copies = len(list(outbox.glob("gpcopy-*.xml")))
        lat, span = timings(base / "var" / "pfhjem-msg.sqlite3")
        mean_bytes = sum(p.stat().st_size for p in files) / len(files)
    e2e_rate = args.messages / e2e_seconds
    bare_rate = args.messages / bare_seconds
    result = {
        "messages": args.messages,
        "mean_message_bytes": round(mean_bytes),
        "marked": args.messages // 2,
        "apprecs_written": apprecs,
        "gp_copies_written": gp_copies,
        "end_to_end_messages_per_s": round(e2e_rate, 1),
        "end_to_end_seconds": round(e2e_seconds, 3),
        "intake_to_last_apprec_messages_per_s": round(args.messages / span, 1) if span else None,
        "latency_intake_to_apprec_p50_s": round(statistics.median(lat), 3) if lat else None,
        "latency_intake_to_apprec_p99_s": round(percentile(lat, 0.99), 3) if lat else None,
        "bare_lxml_parse_validate_messages_per_s": round(bare_rate, 1),
        "ratio_end_to_end_to_bare": round(e2e_rate / bare_rate, 4),
        "disk_probe_fsynced_files_per_s": round(disk_files_per_s, 1),
        "floor_messages_per_s": args.floor,
        "durable": "intake and delivery commits fsynced (WAL, FULL); files flushed before rename, names flushed",
    }
    print(json.dumps(result, indent=2))
    return 0 if e2e_rate >= args.floor and apprecs == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
