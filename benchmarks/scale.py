"""The cost of a job as jobs accumulate in the system (issue 17's scale curve).

Starts the embedded platform as ``pai up`` does (``pai_cli.platform.Platform``) with ``--nodes`` runtime
agents x ``--gpus-per-node`` simulated GPUs (default 20 x 8), then submits ``--jobs`` trivial jobs (one
task running ``true``, no GPU) in windows of ``--window`` from ``--concurrency`` HTTP clients; each window
is waited for (every job final) before the next one starts, so window *k* runs with *k x window* jobs
already stored. For each window: platform CPU per job, database round trips and bus messages per job,
jobs per second, submit and submit-to-running percentiles, RSS (``load_phases.PhaseResult.figures``).

The question is whether a job costs more when the system holds more jobs: the summary gives the CPU per
job of the last window over the first (1.0 = flat) and the least-squares slope of CPU per job against
the jobs already stored (ms per 1,000 jobs). CPU seconds are counted per process, so they depend little
on what else runs on the machine; wall-clock figures (jobs/s, latencies) do, and the load average is
recorded beside every window.

``--raw FILE`` (default with ``--record``: ``benchmarks/raw/scale-<time>.json``) keeps every request
and job outcome the figures come from; ``--record`` appends a section to ``RESULTS.md``.

Run: ``python benchmarks/scale.py [--nodes 20] [--gpus-per-node 8] [--jobs 2000] [--window 200] [--record]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from load_phases import PhaseResult, platform_phase
from machine import describe, machine
from proc_stats import load_average
from vs_slurm import RunningPlatform

from pai_cli.platform import Platform, PlatformError

DECISIONS = "pai_scheduler_decision_seconds_bucket"
HERE = Path(__file__).resolve().parent
RESULTS_FILE = HERE / "RESULTS.md"
RAW_DIR = HERE / "raw"

COLUMNS = (
    ("stored before", "stored_before"),
    ("CPU ms / job", "cpu_ms_per_job"),
    ("db requests / job", "db_per_job"),
    ("bus messages / job", "bus_per_job"),
    ("jobs/s", "jobs_per_s"),
    ("submit p50 / p99 ms", "submit"),
    ("submit→running p50 / p99 ms", "to_running"),
    ("scheduler decision p50 / p99 ms", "decision"),
    ("5xx", "server_errors_5xx"),
    ("RSS MiB", "rss_mib"),
    ("load before", "load_before"),
)


def scheduler_buckets(data_dir: Path) -> dict[float, float]:
    """The scheduler's decision-latency histogram, all event types together: upper bound (s) → count.
    Found through the scrape target the scheduler announces in ``<data dir>/run/targets/``."""
    out: dict[float, float] = {}
    for target in (data_dir / "run" / "targets").glob("scheduler*.json"):
        for entry in json.loads(target.read_text()):
            for address in entry.get("targets", []):
                text = httpx.get(f"http://{address}/metrics", timeout=10.0, trust_env=False).text
                for line in text.splitlines():
                    if not line.startswith(DECISIONS + "{"):
                        continue
                    labels, value = line.rsplit(" ", 1)
                    bound = labels.split('le="', 1)[1].split('"', 1)[0]
                    key = float("inf") if bound == "+Inf" else float(bound)
                    out[key] = out.get(key, 0.0) + float(value)
    return out


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound (ms) of the bucket holding the q-quantile of the decisions between two reads."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]  # cumulative, as Prometheus keeps them
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= q * total:
            return bound * 1000.0
    return None


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """The least-squares slope of ys against xs; None with fewer than two distinct xs."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def row(fig: dict[str, Any], stored_before: int, decision: str) -> dict[str, Any]:
    per_job = fig.get("per_job") or {}
    db = per_job.get("mongo requests", 0.0)
    bus = sum(v for k, v in per_job.items() if k in ("stream PAI_EVENTS", "stream PAI_COMMANDS"))
    return {
        "stored_before": stored_before,
        "cpu_ms_per_job": fig.get("cpu_ms_per_job"),
        "db_per_job": round(db, 1) if per_job else None,
        "bus_per_job": round(bus, 1) if per_job else None,
        "jobs_per_s": fig.get("jobs_per_s"),
        "submit": f"{fig.get('submit_ms_p50')} / {fig.get('submit_ms_p99')}",
        "to_running": f"{fig.get('submit_to_running_ms_p50')} / {fig.get('submit_to_running_ms_p99')}",
        "decision": decision,
        "server_errors_5xx": fig.get("server_errors_5xx"),
        "rss_mib": fig.get("rss_mib"),
        "load_before": fig.get("load_before"),
        "not_succeeded": fig.get("not_succeeded"),
        "timed_out": fig.get("timed_out"),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    cpu = [(r["stored_before"], r["cpu_ms_per_job"]) for r in rows if r["cpu_ms_per_job"] is not None]
    first, last = (cpu[0][1], cpu[-1][1]) if cpu else (None, None)
    fitted = slope([float(x) for x, _ in cpu], [float(y) for _, y in cpu])
    return {
        "windows": len(rows),
        "cpu_ms_per_job_first": first,
        "cpu_ms_per_job_last": last,
        "last_over_first": round(last / first, 2) if first and last else None,
        "cpu_ms_per_job_slope_per_1000_stored": None if fitted is None else round(fitted * 1000, 2),
        "server_errors_5xx": sum(r["server_errors_5xx"] or 0 for r in rows),
        "not_succeeded": sum(r["not_succeeded"] or 0 for r in rows),
        "timed_out_windows": sum(1 for r in rows if r["timed_out"]),
    }


def record(
    args: argparse.Namespace,
    argv: Sequence[str],
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    startup_s: float | None,
    raw_path: Path | None,
) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "",
        f"## {now} — scale: the cost of a job as jobs accumulate ({args.jobs} jobs,"
        f" windows of {args.window})",
        "",
        f"Command: `python benchmarks/scale.py {shlex.join(argv)}`",
        "",
        f"Machine: {describe()}. Platform: {args.nodes} nodes x {args.gpus_per_node} simulated GPUs, ready "
        f"in {startup_s or 0:.1f} s; {args.concurrency} clients; trivial jobs (one task, `true`, no GPU). "
        "CPU per job is per-process CPU time (little affected by other work on the machine); jobs/s and "
        "latencies are wall-clock and depend on the load recorded in each row.",
        "",
        "| " + " | ".join(label for label, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *["| " + " | ".join(str(r[key]) for _, key in COLUMNS) + " |" for r in rows],
        "",
        f"CPU per job, last window over first: {summary['last_over_first']}; least-squares slope "
        f"{summary['cpu_ms_per_job_slope_per_1000_stored']} ms per 1,000 jobs stored. 5xx: "
        f"{summary['server_errors_5xx']}; jobs not SUCCEEDED: {summary['not_succeeded']}; windows timed out: "
        f"{summary['timed_out_windows']}.",
    ]
    if raw_path is not None:
        lines += ["", f"Raw outcomes: `{raw_path.relative_to(HERE.parent)}`."]
    with RESULTS_FILE.open("a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    print(f"recorded in {RESULTS_FILE}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs in all (default 2000)")
    parser.add_argument("--window", type=int, default=200, help="jobs per window (default 200)")
    parser.add_argument("--concurrency", type=int, default=8, help="HTTP clients (default 8)")
    parser.add_argument("--timeout", type=float, default=900.0, help="per window, seconds")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--raw", type=Path, default=None, help="write the raw outcomes here (JSON)")
    parser.add_argument("--record", action="store_true", help="append the figures to RESULTS.md")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.window < 1 or args.jobs < args.window:
        parser.error("--window must be >= 1 and --jobs >= --window")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    run_id = f"scale-{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="pai-scale-"))
    print(f"machine: {describe()}; load {load_average()}; work dir {work}", flush=True)
    extra = {"PAI_RATE_LIMIT_SUBMIT_PER_HOUR": "0", "PAI_RATE_LIMIT_LIST_PER_MIN": "0"}
    data_dir = args.data_dir or work / "platform"
    pai = Platform(
        data_dir=data_dir,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        port=0,
        extra_env=extra,
    )
    running = RunningPlatform(pai, args.concurrency)
    phases: list[PhaseResult] = []
    rows: list[dict[str, Any]] = []
    failed = False
    try:
        running.start()
        print(f"platform ready in {running.startup_s:.2f} s at {pai.url}", flush=True)
        assert running.client is not None
        for k in range(args.jobs // args.window):
            stored = k * args.window
            print(f"window {k + 1}: {args.window} jobs, {stored} stored before (load {load_average()})")
            decided_before = scheduler_buckets(data_dir)
            result = platform_phase(
                running.client,
                label=f"w{k:02d}",
                run_id=run_id,
                jobs=args.window,
                concurrency=args.concurrency,
                pids=running.pids,
                alive=pai.dead_children,
                rss_mib=running.rss_mib,
                user=running.user,
                capacity=running.capacity(),
                timeout_s=args.timeout,
                poll_interval_s=args.poll_interval,
                counts=running.counts,
            )
            phases.append(result)
            decided = scheduler_buckets(data_dir)
            decision = " / ".join(str(bucket_quantile(decided_before, decided, q)) for q in (0.5, 0.99))
            rows.append(row(result.figures(), stored, decision))
            print("  " + json.dumps(rows[-1]), flush=True)
            if result.timed_out:
                print("  the window timed out: stopping here", flush=True)
                break
    except (PlatformError, RuntimeError, httpx.HTTPError) as exc:
        print(f"ERROR: {type(exc).__name__}: {exc}", flush=True)
        failed = True
    finally:
        running.stop()
    summary = summarise(rows)
    print(json.dumps(summary, sort_keys=True))
    raw_path = args.raw
    if raw_path is None and args.record and rows:
        RAW_DIR.mkdir(exist_ok=True)
        raw_path = RAW_DIR / f"scale-{time.strftime('%Y%m%d-%H%M')}.json"
    if raw_path is not None:
        raw = {
            "machine": machine(),
            "argv": argv,
            "startup_s": running.startup_s,
            "summary": summary,
            "rows": rows,
            "windows": [p.raw() for p in phases],
        }
        raw_path.write_text(json.dumps(raw, indent=1, default=str))
        print(f"raw outcomes in {raw_path}")
    if args.record and rows:
        record(args, argv, rows, summary, running.startup_s, raw_path)
    return 1 if failed or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
