"""What an idle platform costs: each process's CPU per second of wall time, for one or more `pai up`.

Attaches to platforms started with ``pai up --data-dir DIR`` (the process ids in ``DIR/pai-up.lock``) and
reads each process's CPU time (user + system, children reaped included) from ``/proc`` over ``--window``
seconds, platform after platform, ``--rounds`` times. Comparing two versions this way, both started and
idle side by side and measured in alternate windows, takes the machine's other work out of the comparison
as far as it can be: each gets the same conditions, turn by turn. Start the platforms, let them settle
(``--settle``: the first seconds after "ready" include start-up work), then run:

    python benchmarks/idle_cpu.py --data-dir A=/tmp/pa --data-dir B=/tmp/pb [--rounds 3] [--window 15]

Prints one line per window, then per platform the mean over its windows by process, and the whole as JSON
(``--json FILE`` keeps it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from proc_stats import delta, load_average, snapshot


def pids_of(data_dir: Path) -> dict[str, int]:
    lock = json.loads((data_dir / "pai-up.lock").read_text())
    return {name: int(pid) for name, pid in lock["processes"].items()}


def window(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """CPU milliseconds per second of each process over one window (0 for one that exited meanwhile)."""
    before = snapshot(pids)
    started = time.monotonic()
    time.sleep(seconds)
    spent = delta(before, snapshot(pids))
    wall = time.monotonic() - started
    return {name: spent.get(name, 0.0) * 1000 / wall for name in pids}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", action="append", required=True, help="LABEL=DIR of a running pai up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--settle", type=float, default=0.0, help="seconds to wait before the first window")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    platforms = {}
    for spec in args.data_dir:
        label, _, path = spec.partition("=")
        if not path:
            parser.error(f"--data-dir {spec}: want LABEL=DIR")
        platforms[label] = pids_of(Path(path))
    time.sleep(args.settle)
    windows: dict[str, list[dict[str, float]]] = {label: [] for label in platforms}
    for round_ in range(1, args.rounds + 1):
        for label, pids in platforms.items():
            load = load_average()
            rates = window(pids, args.window)
            windows[label].append(rates)
            print(f"round {round_} {label}: {sum(rates.values()):.1f} ms/s (load {load})", flush=True)
    result = {}
    for label, taken in windows.items():
        mean = {name: round(sum(w[name] for w in taken) / len(taken), 1) for name in taken[0]}
        ordered = dict(sorted(mean.items(), key=lambda kv: -kv[1]))
        total = round(sum(mean.values()), 1)
        result[label] = {
            "total_ms_per_s": total,
            "windows_ms_per_s": [round(sum(w.values()), 1) for w in taken],
            "by_process": ordered,
        }
        print(f"{label}: {total} ms/s; " + ", ".join(f"{k} {v}" for k, v in ordered.items()), flush=True)
    out = {"window_s": args.window, "rounds": args.rounds, "platforms": result}
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
