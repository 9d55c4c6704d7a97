"""End-to-end throughput of the daemon against a bare lxml parse+validate loop.

Writes N generated messages (about 4 KB each, half of them marked «Pakkeforløp hjem») into a
fresh spool, runs ``pfhjem-msg run --once`` on them as a subprocess (every acceptance durable:
SQLite ``synchronous=FULL`` for intake and delivery commits, every delivered file flushed), then reads the store for the
latency from intake to the AppRec written. On the same files, in the same run, it times a bare
lxml parse + XMLSchema.validate loop with the same compiled schemas. Prints JSON; ``ratio`` is
end-to-end speed / bare-loop speed. End to end is the whole command, process start-up (and
the worker processes' schema compilation) included; ``intake_to_last_apprec`` leaves those
out. Exit 1 when the end-to-end rate is under the floor.

With ``--store postgresql`` the same files are also run through a PostgreSQL store (a fresh
database on ``--pg`` that is dropped afterwards), by ``--daemons`` daemons
started together on one spool (``run`` services, timed until the last AppRec is written, when
there are several); the SQLite figure and the bare loop of the same run stand beside it, with
the ratios between them. The floor applies to the SQLite figure.

    python benchmarks/throughput.py [--messages 2000] [--floor 500]
    python benchmarks/throughput.py --store postgresql [--daemons 2] [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

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


TIMES = (
    "SELECT m.received_at, d.delivered_at FROM messages m JOIN deliveries d ON d.message_id = m.id "
    "WHERE d.kind = 'apprec' AND d.delivered_at IS NOT NULL"
)


def timings(db: Path | str) -> tuple[list[float], float]:
    """Seconds from each message's acceptance to its AppRec written; and the seconds from the
    first acceptance to the last AppRec (the run without process start-up and shut-down).
    ``db``: the SQLite file, or a PostgreSQL URL."""
    if isinstance(db, Path):
        con = sqlite3.connect(db)
        rows = con.execute(TIMES).fetchall()
        con.close()
    else:
        import psycopg

        with psycopg.connect(db) as pg:
            rows = pg.execute(TIMES).fetchall()
    pairs = [(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in rows]
    span = (max(b for _, b in pairs) - min(a for a, _ in pairs)).total_seconds() if pairs else 0.0
    return [(b - a).total_seconds() for a, b in pairs], span


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of ``admin_url``, dropped afterwards:
    the URL to it."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = f"pfhjem_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    params = conninfo_to_dict(admin_url)
    params["dbname"] = name
    url = "postgresql://{user}@{host}:{port}/{dbname}".format(
        user=params.get("user", "postgres"), host=params.get("host", "127.0.0.1"),
        port=params.get("port", 5432), dbname=name,
    )  # fmt: skip
    try:
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run_daemons(base: Path, files: list[Path], store_url: str | None, daemons: int) -> dict[str, Any] | None:
    """Put the files into a fresh spool under ``base`` and time the daemons on it: one
    ``run --once`` until it exits; several ``run`` services (a ``run --once`` would leave as
    soon as the others had claimed what is left) until every AppRec is in the outbox, then
    stopped. Process start-up is in the time either way. None when a daemon failed."""
    base.mkdir(parents=True)
    config = base / "config.toml"
    text = CONFIG.format(registry=ROOT / "config" / "gp-registry.csv")
    if store_url is not None:
        text += f'[store]\nurl = "{store_url}"\n'
    config.write_text(text, encoding="utf-8")
    inbox = base / "var" / "inbox"
    inbox.mkdir(parents=True)
    for p in files:
        os.link(p, inbox / p.name)
    os.sync()  # the benchmark's own files on disk first: the daemon is not charged for them
    outbox = base / "var" / "outbox"
    command = [sys.executable, "-m", "pfhjem_msg", "run", "--config", str(config)]
    if daemons == 1:
        command.insert(4, "--once")
    start = time.perf_counter()
    logs = [(base / f"daemon-{n}.log").open("wb") for n in range(daemons)]  # a pipe would fill and stop them
    procs = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT) for log in logs]
    if daemons > 1:
        deadline = time.monotonic() + 600
        while len(list(outbox.glob("apprec-*.xml"))) < len(files) and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait()
    if daemons == 1:
        seconds = time.perf_counter() - start
    for proc, log in zip(procs, logs, strict=True):
        log.close()
        if proc.returncode != 0:
            sys.stderr.write(Path(log.name).read_text(encoding="utf-8", errors="replace")[-2000:])
            return None
    outbox = base / "var" / "outbox"
    lat, span = timings(store_url or base / "var" / "pfhjem-msg.sqlite3")
    n = len(files)
    return {
        "daemons": daemons,
        "apprecs_written": len(list(outbox.glob("apprec-*.xml"))),
        "gp_copies_written": len(list(outbox.glob("gpcopy-*.xml"))),
        "end_to_end_messages_per_s": round(n / seconds, 1),
        "end_to_end_seconds": round(seconds, 3),
        "intake_to_last_apprec_messages_per_s": round(n / span, 1) if span else None,
        "latency_intake_to_apprec_p50_s": round(statistics.median(lat), 3) if lat else None,
        "latency_intake_to_apprec_p99_s": round(percentile(lat, 0.99), 3) if lat else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument(
        "--floor", type=float, default=500.0, help="messages/s end to end on SQLite (default 500)"
    )
    ap.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                    help="postgresql: also run the files through a PostgreSQL store")  # fmt: skip
    ap.add_argument("--daemons", type=int, default=1, help="daemons sharing the PostgreSQL store (default 1)")
    ap.add_argument("--pg", default=os.environ.get("PFHJEM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
                    help="a PostgreSQL server to create the benchmark's database on (connect as a user who may)")  # fmt: skip
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("PFHJEM_BENCH_DIR")) as tmp:
        base = Path(tmp)
        source = base / "generated"
        source.mkdir()
        files = make_messages(source, args.messages)
        bare_seconds = bare_loop(files)
        disk_files_per_s = disk_probe(base / "probe")
        mean_bytes = sum(p.stat().st_size for p in files) / len(files)
        sqlite = run_daemons(base / "sqlite", files, None, 1)
        if sqlite is None:
            return 2
        pg = None
        if args.store == "postgresql":
            with fresh_database(args.pg) as url:
                pg = run_daemons(base / "postgresql", files, url, args.daemons)
            if pg is None:
                return 2
    e2e_rate = sqlite["end_to_end_messages_per_s"]
    bare_rate = args.messages / bare_seconds
    result: dict[str, Any] = {
        "messages": args.messages,
        "mean_message_bytes": round(mean_bytes),
        "marked": args.messages // 2,
        **{k: v for k, v in sqlite.items() if k != "daemons"},
        "bare_lxml_parse_validate_messages_per_s": round(bare_rate, 1),
        "ratio_end_to_end_to_bare": round(e2e_rate / bare_rate, 4),
        "disk_probe_fsynced_files_per_s": round(disk_files_per_s, 1),
        "floor_messages_per_s": args.floor,
        "durable": "intake and delivery commits fsynced (WAL, FULL); files flushed before rename, names flushed",
    }
    if pg is not None:
        result["postgresql"] = {
            **pg,
            "ratio_end_to_end_to_bare": round(pg["end_to_end_messages_per_s"] / bare_rate, 4),
            "ratio_end_to_end_to_sqlite": round(pg["end_to_end_messages_per_s"] / e2e_rate, 4),
        }
    print(json.dumps(result, indent=2))
    complete = sqlite["apprecs_written"] == args.messages and (
        pg is None or pg["apprecs_written"] == args.messages
    )
    return 0 if e2e_rate >= args.floor and complete else 1


if __name__ == "__main__":
    sys.exit(main())
