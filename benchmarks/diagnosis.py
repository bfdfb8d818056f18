"""Diagnoses per second of the exit-spec matcher (``pai_diagnosis.matcher``) on 10 MB logs, in process.

Each case is one task exit whose log tail is 10 MB (the most the matcher reads):

* ``clean, exit 1``: a training log with nothing recognisable; every log pattern scans all of it and the
  answer is the fallback 255 (the worst case for a normal log);
* ``CUDA OOM at the end``: the same log ending in PyTorch's out-of-memory traceback (code 300, after
  the patterns listed before it have scanned the whole log);
* ``SIGKILL, clean``: exit 137 with the clean log (the OOM-killer patterns scan it, then code 137);
* ``adversarial``: 10 MB built against the spec's ``.*`` patterns ("tensorflow " repeated, near misses);
* ``64 KiB event tail``: what the service gets in ``task.exited`` (the log tail is bounded to 64 KiB).

For comparison, the clean case is also run once with Python's backtracking ``re`` on the same patterns
(the adversarial case is not: some patterns would take far longer there). Prints the figures, then one
JSON object on the last line. ``--record`` appends a dated section to ``benchmarks/RESULTS.md``.
Run: ``python benchmarks/diagnosis.py [--repeat 5] [--record]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any

from machine import describe as machine

from pai_diagnosis.matcher import MAX_LOG_BYTES, TaskEnd, diagnose
from pai_diagnosis.spec import builtin_spec

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
EVENT_TAIL = 64 * 1024


def clean_log(size: int, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    lines = []
    total = 0
    step = 0
    while total < size:
        step += 1
        line = (
            f"[2026-11-05 10:{step // 60 % 60:02d}:{step % 60:02d}] epoch {step // 1000} step {step} "
            f"loss={rng.random() * 3:.4f} lr={rng.random() / 1000:.6f} grad_norm={rng.random() * 10:.3f} "
            f"throughput={rng.randint(800, 1200)} samples/s"
            f" gpu_mem={rng.randint(30, 39)}.{rng.randint(0, 9)}GiB\n"
        ).encode()
        lines.append(line)
        total += len(line)
    return b"".join(lines)[-size:]


OOM_TAIL = (
    b'Traceback (most recent call last):\n  File "train.py", line 211, in <module>\n    main()\n'
    b"torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 39.39 GiB total"
    b" capacity; 35.12 GiB already allocated)\n"
)


def cases() -> dict[str, TaskEnd]:
    clean = clean_log(MAX_LOG_BYTES)
    oom = clean[len(OOM_TAIL) :] + OOM_TAIL
    adversarial = (b"tensorflow ResourceExhaustedError " * 10 + b"tensorflow " * 300 + b"\n") * (
        MAX_LOG_BYTES // 3660
    )
    return {
        "clean, exit 1": TaskEnd(1, user_log=clean, platform_log=clean),
        "CUDA OOM at the end": TaskEnd(1, user_log=oom, platform_log=oom),
        "SIGKILL, clean": TaskEnd(-9, 9, clean, clean),
        "adversarial": TaskEnd(
            1, user_log=adversarial[-MAX_LOG_BYTES:], platform_log=adversarial[-MAX_LOG_BYTES:]
        ),
        "64 KiB event tail": TaskEnd(1, user_log=oom[-EVENT_TAIL:], platform_log=oom[-EVENT_TAIL:]),
    }


def python_re_seconds(log: bytes) -> float:
    """The same search with Python's ``re`` (Go's (?i)/(?m)/(?s) flags mean the same there)."""
    spec = builtin_spec()
    patterns: list[re.Pattern[bytes]] = []
    for entry in spec.entries:
        for rp in entry.runtime_patterns:
            for compiled in (rp.user_log, rp.platform_log):
                if compiled is not None:
                    patterns.append(re.compile(compiled.pattern))
    started = time.perf_counter()
    for pattern in patterns:
        pattern.search(log)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    spec = builtin_spec()
    results: dict[str, Any] = {}
    for name, end in cases().items():
        times = []
        code = None
        for _ in range(args.repeat):
            started = time.perf_counter()
            code = diagnose(spec, end).code
            times.append(time.perf_counter() - started)
        size = len(end.user_log)
        median = statistics.median(times)
        results[name] = {
            "log_bytes": size,
            "code": code,
            "median_ms": round(median * 1000, 2),
            "max_ms": round(max(times) * 1000, 2),
            "diagnoses_per_s": round(1 / median, 1),
            "MB_per_s": round(size / median / 1e6, 1),
        }
        print(f"{name:22s} code {code:>5}  median {median * 1000:8.2f} ms  {1 / median:9.1f} diagnoses/s")
    re_s = python_re_seconds(clean_log(MAX_LOG_BYTES))
    results["python re, clean (one run)"] = {"seconds": round(re_s, 3)}
    print(f"python re, clean log: {re_s * 1000:.1f} ms for the same searches")
    record = {"machine": machine(), "results": results}
    if args.record:
        lines = [
            "",
            f"## Diagnosis matcher, 10 MB logs ({dt.date.today().isoformat()})",
            "",
            f"`python benchmarks/diagnosis.py --repeat {args.repeat}`. Machine: {machine()}."
            " One diagnosis = the whole spec (76 entries, RE2) against one task exit.",
            "",
            "| case | log | code | median (ms) | diagnoses/s | MB/s |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in results.items():
            if "median_ms" in r:
                lines.append(
                    f"| {name} | {r['log_bytes'] / 1e6:.1f} MB | {r['code']} | {r['median_ms']} |"
                    f" {r['diagnoses_per_s']} | {r['MB_per_s']} |"
                )
        lines.append("")
        lines.append(
            f"Python's backtracking `re`, same patterns, clean 10 MB log: {re_s * 1000:.0f} ms per diagnosis"
            " (and unbounded on adversarial input, which is why the matcher uses RE2)."
        )
        with RESULTS_FILE.open("a") as f:
            f.write("\n".join(lines) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
