"""What pathway detection (``explain``'s pathway part: marking, negation, contact point,
diagnosis date, lifecycle, windows) costs per message, against a bare lxml parse+validate
loop over the same messages in the same run.

Builds N messages from the valid samples (fresh MsgIds), reads each once (as the daemon does
before deciding), then times, best of R rounds:
- baseline: lxml parse + XMLSchema.validate of the bytes, nothing else;
- detection: ``pathway.analyse`` on the read message, with the text caches emptied before each
  message (every real message brings new text).
Both sides are timed in CPU time of this process (``time.process_time``): on a shared machine
wall time mostly measures the neighbours. Prints JSON; ``ratio`` is detection time / baseline
time per message (lower is better).

    python benchmarks/detect_speed.py [--files 700] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pfhjem_msg.kith.schemas import load_schema_set  # noqa: E402
from pfhjem_msg.kith.verdict import Options, examine  # noqa: E402
from pfhjem_msg.pathway import Matcher, analyse  # noqa: E402
from pfhjem_msg.pathway.text import clean, clean_cased  # noqa: E402


def seeds() -> list[bytes]:
    return [
        p.read_bytes()
        for p in sorted((ROOT / "samples").glob("*.xml"))
        if not p.name.startswith(("broken", "signed", "apprec"))
    ]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=700)
    ap.add_argument("--rounds", type=int, default=5, help="best of N for each side")
    args = ap.parse_args()
    schemas = load_schema_set()
    options = Options(schemas=schemas)
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    base = seeds()
    files = [
        base[i % len(base)].replace(b"5f0c", uuid.uuid4().hex[:4].encode(), 1) for i in range(args.files)
    ]
    verdicts = [examine(data, f"m{i}", options) for i, data in enumerate(files)]
    read = [v for v in verdicts if v.message is not None and not v.salvaged]
    for v in read:
        assert v.message is not None
        _ = v.message.payload  # reading the payload is the parser's cost, not detection's
    matcher = Matcher()

    def baseline() -> int:
        return sum(bool(schemas.schema.validate(etree.fromstring(data, parser))) for data in files)

    def detection() -> int:
        marked = 0
        for v in read:
            assert v.message is not None
            clean.cache_clear()
            clean_cased.cache_clear()
            marked += analyse(v.message, matcher, v.root).detection.marked
        return marked

    best: dict[str, float] = {}
    marked = 0
    for _ in range(args.rounds):
        for name, fn in (("baseline", baseline), ("detection", detection)):
            start = time.process_time()
            result = fn()
            elapsed = time.process_time() - start
            best[name] = min(best.get(name, elapsed), elapsed)
            if name == "detection":
                marked = result
    per_base = best["baseline"] / len(files)
    per_detect = best["detection"] / len(read)
    print(
        json.dumps(
            {
                "messages": len(files),
                "read": len(read),
                "marked": marked,
                "baseline_ms_per_message": round(per_base * 1000, 4),
                "detection_ms_per_message": round(per_detect * 1000, 4),
                "ratio": round(per_detect / per_base, 3),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
