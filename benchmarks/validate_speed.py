"""How fast `validate` is against a bare lxml parse+validate loop over the same files.

Writes N small messages (copies of the valid samples with fresh MsgIds) to a temporary
directory, then times, on the same files and the same compiled schemas:
- baseline: lxml parse + XMLSchema.validate, nothing else;
- product: what `pfhjem-msg validate` does per file (hardened parse, envelope check, schema
  validation, typed model, code-list checks, signature check).
Prints JSON; `ratio` is product speed / baseline speed (the floor is 0.5).

    python benchmarks/validate_speed.py [--files 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pfhjem_msg.kith.batch import default_jobs, examine_file, validate_files  # noqa: E402
from pfhjem_msg.kith.schemas import load_schema_set  # noqa: E402
from pfhjem_msg.kith.verdict import Options  # noqa: E402


def make_corpus(directory: Path, count: int) -> list[Path]:
    seeds = [
        p.read_bytes()
        for p in sorted((ROOT / "samples").glob("*.xml"))
        if not p.name.startswith(("broken", "signed")) and p.stat().st_size < 8_000
    ]
    files = []
    for i in range(count):
        seed = seeds[i % len(seeds)]
        data = seed.replace(b"5f0c", uuid.uuid4().hex[:4].encode(), 1)
        path = directory / f"m{i:05d}.xml"
        path.write_bytes(data)
        files.append(path)
    return files


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5, help="best of N for each side")
    args = ap.parse_args()
    schemas = load_schema_set()
    options = Options(schemas=schemas)
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = make_corpus(Path(tmp), args.files)
        total_bytes = sum(p.stat().st_size for p in files)

        def baseline() -> int:
            ok = 0
            for p in files:
                ok += bool(schemas.schema.validate(etree.parse(str(p), parser)))
            return ok

        def single() -> int:
            return sum(examine_file(p, options).valid for p in files)

        def product() -> int:
            return sum(r.valid for r in validate_files(files, options))

        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, fn in (("baseline", baseline), ("single", single), ("product", product)):
                start = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - start
                best[name] = min(best.get(name, elapsed), elapsed)
    result = {
        "files": args.files,
        "mean_file_bytes": round(total_bytes / args.files),
        "baseline_lxml_files_per_s": round(args.files / best["baseline"], 1),
        "validate_files_per_s": round(args.files / best["product"], 1),
        "validate_jobs": default_jobs(),
        "ratio": round(best["baseline"] / best["product"], 3),
        "single_process_files_per_s": round(args.files / best["single"], 1),
        "single_process_ratio": round(best["baseline"] / best["single"], 3),
        "floor": 0.5,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["ratio"] >= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
