"""Hand-made hostile inputs, and what each costs: time and peak memory of one verdict.

Each attack is built from a sample (nothing large is committed) and written to a temporary
file, which a fresh subprocess reads and examines, so the peak resident memory (ru_maxrss) is
that of reading and judging it. The subprocess has an address-space cap; an attack that
breaks the cap or the time budget is reported as such.
Prints one JSON object: per attack the verdict codes, seconds and peak MiB.

    python benchmarks/hostile_inputs.py [--only NAME ...] [--budget-seconds 10] [--budget-mib 1024]

The tests in tests/test_total_*.py use the same builders and assert the verdicts only.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SAMPLES = ROOT / "samples"
ATTACHMENT_SAMPLE = SAMPLES / "dlg11-marked-attachment.xml"
TEXT_SAMPLE = SAMPLES / "dlg11-marked-kreftpasienter.xml"
_BASE64 = re.compile(rb"(<Base64Container[^>]*>)[^<]*(</Base64Container>)")
_DECLARATION = re.compile(rb"^<\?xml[^>]*\?>\s*")


def with_attachment(size: int) -> bytes:
    """The attachment sample with a PDF of ``size`` bytes, base64 in 76-character lines."""
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * (size // 256 + 1)
    encoded = base64.encodebytes(pdf[:size])
    return _BASE64.sub(lambda m: m.group(1) + encoded + m.group(2), ATTACHMENT_SAMPLE.read_bytes(), count=1)


def large_attachment_8mb_pdf() -> bytes:
    return with_attachment(8 * 1024 * 1024)


def attachment_near_max_bytes() -> bytes:
    return with_attachment(46 * 1024 * 1024)  # about 62 MiB of XML, under the 64 MiB default


def siblings_15_million() -> bytes:
    return b"<a>" + b"<b/>" * 15_000_000 + b"</a>"


def comments_9_million() -> bytes:
    return b"<a>" + b"<!---->" * 9_000_000 + b"</a>"


def attributes_5_million() -> bytes:
    return b"<a " + b" ".join(b"a%d=''" % i for i in range(5_000_000)) + b"/>"


def nested_100_thousand_deep() -> bytes:
    return b"<a>" * 100_000 + b"</a>" * 100_000


def utf7_hidden_markup() -> bytes:
    return b'<?xml version="1.0" encoding="UTF-7"?>' + b"+ADw-a+AD4-" * 1000


def _mail(content_type: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"MIME-Version: 1.0\r\nContent-Type: " + content_type + b"\r\n" + extra + b"\r\n" + body


def mime_charset_undefined() -> bytes:
    body = _DECLARATION.sub(b"", TEXT_SAMPLE.read_bytes())
    return _mail(b"text/xml; charset=undefined", body)


def mime_nested_1000_deep() -> bytes:
    levels = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(1000)
    )
    return b"MIME-Version: 1.0\r\n" + levels + b"Content-Type: text/xml\r\n\r\n" + TEXT_SAMPLE.read_bytes()


def mime_5_million_parts() -> bytes:
    return _mail(b'multipart/mixed; boundary="b"', b"--b\r\n\r\n<a/>\r\n" * 5_000_000 + b"--b--\r\n")


def mime_10_million_headers() -> bytes:
    return b"MIME-Version: 1.0\r\n" + b"X: y\r\n" * 10_000_000 + b"\r\n" + TEXT_SAMPLE.read_bytes()


def mime_60_million_blank_lines() -> bytes:
    return _mail(b"text/plain", b"\n" * 60_000_000)


def schema_errors_90_thousand() -> bytes:
    """A readable message with 1,000 Documents that each carry 90 attributes the schema
    forbids: 90,000 schema errors from one message, within the attribute limit."""
    data = TEXT_SAMPLE.read_bytes()
    start = data.index(b"<Document>")
    end = data.index(b"</Document>", start) + len(b"</Document>")
    bogus = b"<Document " + b" ".join(b"x%d='1'" % i for i in range(90)) + b">"
    document = bogus + data[start + len(b"<Document>") : end]
    return data[:start] + document * 1000 + data[end:]


ATTACKS: dict[str, Callable[[], bytes]] = {
    f.__name__: f
    for f in (
        large_attachment_8mb_pdf,
        attachment_near_max_bytes,
        siblings_15_million,
        comments_9_million,
        attributes_5_million,
        nested_100_thousand_deep,
        utf7_hidden_markup,
        mime_charset_undefined,
        mime_nested_1000_deep,
        mime_5_million_parts,
        mime_10_million_headers,
        mime_60_million_blank_lines,
        schema_errors_90_thousand,
    )
}

_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from pfhjem_msg.kith import apprec
from pfhjem_msg.kith.verdict import Options, examine
options = Options()
data = open({path!r}, "rb").read()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
verdict = examine(data, {name!r}, options)
decision = apprec.decide(verdict)
elapsed = time.perf_counter() - start
print(json.dumps({{
    "bytes": len(data),
    "seconds": round(elapsed, 3),
    "peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "peak_mib_with_input_read": round(base / 1024, 1),
    "valid": verdict.valid,
    "codes": sorted({{i.code for i in verdict.issues}}),
    "issues": len(verdict.issues),
    "apprec": decision.status,
}}))
"""


def run_attack(name: str, address_space: int = 3 << 30, timeout: float = 120.0) -> dict[str, object]:
    """One attack in a fresh interpreter under an address-space cap; its measurements or how
    it failed."""

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        attack = Path(tmp) / name
        attack.write_bytes(ATTACKS[name]())
        return _examine_in_child(name, attack, address_space, timeout, started)


def _examine_in_child(
    name: str, attack: Path, address_space: int, timeout: float, started: float
) -> dict[str, object]:
    def cap() -> None:  # pragma: no cover - runs in the child
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD.format(root=str(ROOT), name=name, path=str(attack))],
            capture_output=True,
            timeout=timeout,
            preexec_fn=cap,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"no verdict within {timeout} s"}
    if done.returncode != 0:
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        return {"failed": f"exit {done.returncode}: {last[0][:200]}"}
    result: dict[str, object] = json.loads(done.stdout)
    result["wall_seconds_with_build"] = round(time.perf_counter() - started, 2)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--only", nargs="*", choices=sorted(ATTACKS), help="run only these attacks")
    ap.add_argument("--budget-seconds", type=float, default=10.0)
    ap.add_argument("--budget-mib", type=float, default=1024.0)
    args = ap.parse_args()
    results = {}
    over = []
    for name in args.only or ATTACKS:
        result = run_attack(name)
        results[name] = result
        seconds = result.get("seconds")
        peak = result.get("peak_mib")
        if (
            "failed" in result
            or not isinstance(seconds, float)
            or not isinstance(peak, float)
            or seconds > args.budget_seconds
            or peak > args.budget_mib
        ):
            over.append(name)
    print(json.dumps({"budget": {"seconds": args.budget_seconds, "mib": args.budget_mib},
                      "over_budget": over, "attacks": results}, indent=2))  # fmt: skip
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
