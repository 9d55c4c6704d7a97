"""Fuzzing the whole drafting step (envelope, parse, validation, typed model, pathway
detection, AppRec and GP copy) for inputs that raise instead of getting a verdict.

Two engines:
- atheris (coverage-guided libFuzzer, when installed: ``pip install -e '.[fuzz]'``); the
  product's modules are instrumented and libFuzzer mutates a corpus seeded from samples/.
- hypothesis, byte-level: the samples mutated by flips, cuts, splices and markup tokens.
``--engine auto`` takes atheris when it imports, hypothesis otherwise.

Every exception the drafting step raises is a crash: it is grouped by type and the place in
the product where it was raised, and the first input of each group is saved to ``--out``.
The JSON report names the crashes by type and place only, never by content.

    python benchmarks/fuzz.py --seconds 20              # the short bounded pass CI runs
    python benchmarks/fuzz.py --seconds 3600 --out fuzz-findings   # an hour
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SAMPLES = ROOT / "samples"
NOW = datetime(2026, 10, 6, 9, 0, tzinfo=UTC)
TOKENS = [
    b"<", b">", b"&", b"&amp;", b"&#0;", b"&#x110000;", b"<!DOCTYPE x>", b"<![CDATA[", b"]]>", b"<!--", b"-->",
    b"<?pi x?>", b"\x00", b"\xff\xfe", b"\xef\xbb\xbf", b"\xc3", b'"', b"'", b"\r", b"\n",
    b"<Patient>", b"</Patient>", b"<MsgId>x</MsgId>", b"<Content/>", b"<Status V='9'/>",
    b"<Ident><Id/></Ident>", b"<Base64Container>", b"xmlns='urn:x'", b'encoding="UTF-16"',
    b'encoding="undefined"', b"Diagnosedato: ", b"12.10.9999", b"31.02.2026", b"00.00.0000",
    b"Pakkeforl\xc3\xb8p hjem", b"9999", b"-1", b"99999999999999999999",
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n", b"--b--", b"charset=undefined",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n",
]  # fmt: skip
"""Pieces of markup, encodings, dates and MIME that random bytes rarely spell by chance."""
DATES = [b"12.10.9999", b"31.12.9999", b"01.01.0001", b"00.00.0000", b"31.02.2026", b"29.02.2027",
         b"9999-12-31", b"0001-01-01", b"2026-13-40", b"99.99.99999"]  # fmt: skip
_DATE = re.compile(rb"\d{2}\.\d{2}\.\d{4}|\d{4}-\d{2}-\d{2}")


def seeds() -> list[bytes]:
    return [p.read_bytes() for p in sorted(SAMPLES.iterdir()) if p.suffix in (".xml", ".eml")]


def demo_settings(directory: Path) -> Any:
    """The demo configuration, with every path under ``directory`` (never the real var/)."""
    from pfhjem_msg.config import load

    config = directory / "config"
    config.mkdir(parents=True, exist_ok=True)
    for name in ("demo.toml", "gp-registry.csv"):
        shutil.copy(ROOT / "config" / name, config / name)
    return load(config / "demo.toml")


class Findings:
    """Inputs run, and the crashes grouped by exception type and place."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.runs = 0
        self.slowest = 0.0
        self.crashes: dict[str, dict[str, Any]] = {}

    def record(self, data: bytes, exc: BaseException) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if "pfhjem_msg" in f.filename] or frames
        where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
        key = f"{type(exc).__name__} at {where}"
        entry = self.crashes.get(key)
        if entry is not None:
            entry["count"] += 1
            return
        saved = None
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            path = self.out / f"crash-{hashlib.sha256(data).hexdigest()[:16]}"
            path.write_bytes(data)
            saved = str(path)
        self.crashes[key] = {"exception": type(exc).__name__, "where": where, "count": 1,
                             "input_bytes": len(data), "input_file": saved}  # fmt: skip

    def report(self, engine: str, seconds: float) -> dict[str, Any]:
        return {"engine": engine, "seconds": round(seconds, 1), "inputs_run": self.runs,
                "slowest_input_seconds": round(self.slowest, 3),
                "crashes": sorted(self.crashes.values(), key=lambda c: str(c["where"]))}  # fmt: skip


def make_target(findings: Findings) -> Callable[[bytes], None]:
    """One input through the drafting step, and the verdict rendered as validate shows it."""
    from pfhjem_msg import logs
    from pfhjem_msg.drafting import Drafter
    from pfhjem_msg.kith.verdict import examine

    logs.configure(level="warning", stream=sys.stderr)  # the report alone goes to stdout, as JSON
    tmp = Path(tempfile.mkdtemp(prefix="pfhjem-fuzz-"))
    drafter = Drafter(demo_settings(tmp))

    def target(data: bytes) -> None:
        findings.runs += 1
        start = time.perf_counter()
        try:
            drafter.draft(data, findings.runs, NOW)
            verdict = examine(data, "fuzz", drafter.options)
            verdict.human_lines()
            verdict.as_dict()
            if not verdict.valid and not verdict.issues:
                raise AssertionError("an invalid verdict without issues")
        except Exception as exc:
            findings.record(data, exc)
        findings.slowest = max(findings.slowest, time.perf_counter() - start)

    return target


def mutate(data: bytes, draw_int: Callable[[int, int], int]) -> bytes:
    """A few byte-level edits of a seed: the mutations libFuzzer makes, plus markup tokens."""
    out = bytearray(data)
    for _ in range(draw_int(1, 8)):
        if not out:
            out.extend(TOKENS[draw_int(0, len(TOKENS) - 1)])
            continue
        pos = draw_int(0, len(out) - 1)
        kind = draw_int(0, 7)
        if kind == 0:
            out[pos] = draw_int(0, 255)
        elif kind == 1:
            del out[pos : pos + draw_int(1, 64)]
        elif kind == 2:
            out[pos:pos] = TOKENS[draw_int(0, len(TOKENS) - 1)]
        elif kind == 3:
            del out[pos:]
        elif kind == 4:
            end = min(len(out), pos + draw_int(1, 512))
            out[pos:pos] = out[pos:end] * draw_int(1, 4)
        elif kind == 5:
            other = pos + draw_int(0, len(out) - pos - 1) if len(out) > pos + 1 else pos
            out[pos], out[other] = out[other], out[pos]
        elif kind == 6:
            digits = b"0123456789"
            out[pos] = digits[draw_int(0, 9)]
        else:  # a date where the seed has one: the pathway reads dates out of free text
            found = list(_DATE.finditer(out))
            if found:
                m = found[draw_int(0, len(found) - 1)]
                out[m.start() : m.end()] = DATES[draw_int(0, len(DATES) - 1)]
    return bytes(out)


def run_hypothesis(seconds: float, out: Path | None) -> dict[str, Any]:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    findings = Findings(out)
    target = make_target(findings)
    corpus = seeds()
    deadline = time.monotonic() + seconds
    started = time.monotonic()

    class TimeUp(Exception):
        pass

    @st.composite
    def inputs(draw: st.DrawFn) -> bytes:
        if draw(st.integers(0, 9)) == 0:
            return draw(st.binary(max_size=4096))
        seed = draw(st.sampled_from(corpus))
        if draw(st.booleans()):  # hypothesis's choices: biased to edges, small and large
            return mutate(seed, lambda lo, hi: draw(st.integers(lo, hi)))
        rng = draw(st.randoms(use_true_random=True))  # even choices reach the middle of a file
        return mutate(seed, rng.randint)

    # Generation only: a crash is recorded, not raised, and the deadline must not be shrunk.
    @settings(max_examples=10**9, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(inputs())
    def fuzz(data: bytes) -> None:
        if time.monotonic() > deadline:
            raise TimeUp
        target(data)

    with contextlib.suppress(TimeUp):
        fuzz()
    return findings.report("hypothesis", time.monotonic() - started)


def _dict_entry(token: bytes) -> str:
    """A libFuzzer dictionary line: the token quoted, with every byte as a \\xNN escape."""
    return '"' + "".join(f"\\x{b:02x}" for b in token) + '"'


def run_atheris_child(
    seconds: float, out: Path, corpus: Path, stats: Path, tokens: Path
) -> None:  # pragma: no cover
    """The libFuzzer process: instruments the product, then runs until the deadline and
    writes its findings to ``stats`` (libFuzzer never returns to the caller)."""
    import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]

    with atheris.instrument_imports(include=["pfhjem_msg"]):
        import pfhjem_msg.drafting  # noqa: F401

    findings = Findings(out)
    target = make_target(findings)
    started = time.monotonic()
    last_write = 0.0

    def write() -> None:
        stats.write_text(json.dumps(findings.report("atheris", time.monotonic() - started)))

    def one_input(data: bytes) -> None:
        nonlocal last_write
        target(data)
        now = time.monotonic()
        if now - last_write > 1.0:
            last_write = now
            write()
        if now - started > seconds:
            write()
            os._exit(0)

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        """libFuzzer's own mutations half the time, ours (markup tokens, dates) otherwise."""
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return bytes(atheris.Mutate(data, max_size))
        return mutate(data, rng.randint)[:max_size]

    atheris.Setup(
        [sys.argv[0], str(corpus), "-max_len=65536", "-rss_limit_mb=2048", "-timeout=10",
         f"-artifact_prefix={out}/", f"-dict={tokens}", f"-max_total_time={int(seconds) + 60}", "-print_final_stats=0"],
        one_input,
        custom_mutator=mutator,
    )  # fmt: skip
    atheris.Fuzz()


def run_atheris(seconds: float, out: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pfhjem-fuzz-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        corpus.mkdir()
        for p in sorted(SAMPLES.iterdir()):
            if p.suffix in (".xml", ".eml"):
                shutil.copy(p, corpus / p.name)
        findings_dir = out or work / "findings"
        findings_dir.mkdir(parents=True, exist_ok=True)
        stats = work / "stats.json"
        dictionary = work / "tokens.dict"
        dictionary.write_text("".join(f"{_dict_entry(t)}\n" for t in TOKENS + DATES))
        done = subprocess.run(
            [sys.executable, __file__, "--child", "--seconds", str(seconds), "--out", str(findings_dir),
             "--corpus", str(corpus), "--stats", str(stats), "--dict", str(dictionary)],
            capture_output=True, timeout=seconds + 120, check=False,
        )  # fmt: skip
        report: dict[str, Any] = json.loads(stats.read_text()) if stats.exists() else {"crashes": []}
        if done.returncode != 0:  # libFuzzer stopped on its own: a timeout, memory or a hard crash
            artifacts = sorted(p.name for p in findings_dir.iterdir() if not p.name.startswith("crash-"))
            report["crashes"].append({"exception": f"libFuzzer exit {done.returncode}",
                                      "where": "see artifacts", "artifacts": artifacts})  # fmt: skip
        report["corpus_size"] = len(list(corpus.iterdir()))
        return report


def atheris_available() -> bool:
    try:
        import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description="Fuzz the drafting step; prints JSON.")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    ap.add_argument("--out", type=Path, help="where to save the first input of each crash")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dict", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # pragma: no cover
        run_atheris_child(args.seconds, args.out, args.corpus, args.stats, args.dict)
        return 0
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if atheris_available() else "hypothesis"
    report = (
        run_atheris(args.seconds, args.out) if engine == "atheris" else run_hypothesis(args.seconds, args.out)
    )
    print(json.dumps(report, indent=2))
    return 1 if report["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
