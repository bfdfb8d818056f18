"""The fault matrix on `pai up`: for each fault, jobs affected, lost, run twice, leaked GPUs, undelivered
messages, wrong answers during recovery, the slowest answer after the fault, the time to recover and the
time until the work in flight settled.

Each fault gets a `pai up` of its own (tests/acceptance/harness.py), the workload of tests/chaos/faults.py
(one-task, multi-role with ports, multi-GPU, secrets, a retry, a stop in flight), then the fault, a probe
submitting a small job every second, and the checks of tests/chaos/faults.py. Faults:

  kill-<process>      SIGKILL of one service, node agent or embedded server (pai up restarts it)
  kill-several        SIGKILL of jobs, orchestrator and scheduler at once
  stop-<process>      SIGSTOP for 30 s, then SIGCONT (a slow, not dead, process)
  bus-disk-full       the bus's store on a small tmpfs, filled while the jobs run, then freed (root only)
  unclean-stop        SIGKILL of the whole tree, then a new `pai up` on the same data dir

The acceptance bar is zero lost, zero run twice, zero leaked. Clock jumps for the orchestrator's timers are
not in the matrix (see benchmarks/README.md: the services read the system clock, which cannot be moved for
one process tree without a clock of their own); services/orchestrator/tests/test_timer_clock.py tests
them with an injected clock.

    python benchmarks/chaos.py                          # every fault
    python benchmarks/chaos.py --only kill-orchestrator,stop-orchestrator --record
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe  # noqa: E402

from pai_cli.mongo_layout import SPLIT_ENV, parse_split  # noqa: E402
from tests.acceptance.harness import RunningPlatform, start_platform, stop_platform  # noqa: E402
from tests.chaos import faults  # noqa: E402

SERVICES = ["gateway", "auth", "storage", "jobs", "scheduler", "orchestrator", "diagnosis", "monitoring"]
STOP_S = 30.0
DISK_FULL_S = 20.0


def _kill(names: list[str]) -> Callable[[RunningPlatform, Path], None]:
    def inject(platform: RunningPlatform, data: Path) -> None:
        faults.kill(platform, *names)

    return inject


def _stop(name: str) -> Callable[[RunningPlatform, Path], None]:
    def inject(platform: RunningPlatform, data: Path) -> None:
        faults.kill(platform, name, sig=signal.SIGSTOP)
        time.sleep(STOP_S)
        faults.kill(platform, name, sig=signal.SIGCONT)

    return inject


def _fill_disk(platform: RunningPlatform, data: Path) -> None:
    filler = data / "nats" / "filler"
    # Written until the tmpfs refuses (fallocate beyond the size undoes itself on tmpfs: nothing is filled).
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], check=False, capture_output=True)
    time.sleep(DISK_FULL_S)
    filler.unlink(missing_ok=True)


FAULTS: dict[str, Callable[[RunningPlatform, Path], None]] = {
    **{f"kill-{s}": _kill([s]) for s in SERVICES},
    "kill-node-0": _kill(["node-0"]),
    "kill-several": _kill(["jobs", "orchestrator", "scheduler"]),
    "kill-nats-server": _kill(["nats-server"]),
    "kill-mongo-server": _kill(["mongo-server"]),
    # The databases with servers of their own (PAI_MONGO_SPLIT, as `pai up` reads it).
    **{
        f"kill-mongo-{s}-server": _kill([f"mongo-{s}-server"]) for s in parse_split(os.environ.get(SPLIT_ENV))
    },
    **{f"stop-{s}": _stop(s) for s in SERVICES},
    "bus-disk-full": _fill_disk,
    "unclean-stop": lambda platform, data: None,  # handled in run_one: the whole tree, then a new start
}


def run_one(fault: str, root: Path) -> dict[str, Any]:
    data = root / fault
    data.mkdir(parents=True)
    workload = faults.Workload(markers=root / f"{fault}.markers")
    if fault == "bus-disk-full":
        (data / "nats").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(data / "nats")], check=True)
    row: dict[str, Any] = {"fault": fault}
    platform = start_platform(data, nodes=2, gpus_per_node=4)
    try:
        with platform.client() as client:
            jobs = workload.jobs(platform.admin_user)
            faults.submit_all(client, jobs)
            faults.wait_running(client, [k for k, _ in jobs if "one" in k])
            with faults.Probe(client, workload, platform.admin_user) as probe:
                fault_at = time.monotonic() - probe.started
                fault_clock = time.monotonic()
                if fault == "unclean-stop":
                    faults.kill_tree(platform)
                    (data / "cli.json").unlink(missing_ok=True)
                    platform = start_platform(data, nodes=2, gpus_per_node=4)
                    probe.client = platform.client()
                else:
                    FAULTS[fault](platform, data)
                deadline = time.monotonic() + faults.GUARD_S
                while probe.recovered_after(fault_at) is None and time.monotonic() < deadline:
                    time.sleep(0.5)
            row["recovery_s"] = probe.recovered_after(fault_at)
            row["wrong_answers"] = len(probe.wrong_answers())
            row["answers_503"] = sum(1 for _, s in probe.answers if s == 503)
            row["slowest_answer_s"] = probe.slowest_after(fault_at)
        with platform.client() as client:
            faults.stop_the_ones_to_stop(client, workload)
            outcome = faults.settle(platform, workload, client)
        # Until every job of the workload is final, its GPUs are back and no consumer holds a message: how
        # long the fault held up work already in flight (the probe's recovery is about new submissions).
        row["settled_s"] = round(time.monotonic() - fault_clock, 1)
        row.update(
            jobs=outcome.jobs,
            lost=len(outcome.lost),
            run_twice=len(outcome.run_twice),
            leaked_gpus=outcome.leaked_gpus,
            undelivered=len(outcome.undelivered),
            detail=(outcome.lost + outcome.run_twice + outcome.undelivered)[:5],
        )
    except Exception as exc:  # a fault the platform did not survive is a row too, not a crash of the run
        row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        if platform.proc.poll() is None:
            stop_platform(platform.proc)
        if fault == "bus-disk-full":
            subprocess.run(["umount", "-l", str(data / "nats")], check=False)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    head = "| fault | jobs | lost | run twice | leaked GPUs | undelivered | wrong answers | 503s"
    head += " | slowest answer (s) | recovery (s) | settled (s) |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['fault']} | did not complete: {r['error']} ||||||||||")
            continue
        rec = "never" if r["recovery_s"] is None else f"{r['recovery_s']:.1f}"
        lines.append(
            f"| {r['fault']} | {r['jobs']} | {r['lost']} | {r['run_twice']} | {r['leaked_gpus']:g} |"
            f" {r['undelivered']} | {r['wrong_answers']} | {r['answers_503']} |"
            f" {r['slowest_answer_s']:.1f} | {rec} | {r['settled_s']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated faults (default: all)")
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    parser.add_argument("--keep", type=Path, help="keep the data dirs (logs) there")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(FAULTS)
    unknown = [f for f in chosen if f not in FAULTS]
    if unknown:
        parser.error(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
    if "bus-disk-full" in chosen and os.geteuid() != 0:
        parser.error("bus-disk-full mounts a tmpfs: run as root")
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pai-chaos-") as tmp:
        root = Path(tmp)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix="pai-chaos-", dir=args.keep))
        for fault in chosen:
            print(f"fault {fault} ... (data in {root / fault})", file=sys.stderr, flush=True)
            rows.append(run_one(fault, root))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    text = table(rows)
    print(text)
    print(json.dumps(rows))
    if args.record:
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        after = os.getloadavg()
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(
                f"\n## {now} — chaos: faults on pai up\n\nMachine: {describe()}; load average"
                f" {load[0]:.1f} before, {after[0]:.1f} after (shared with other engineers' runs).\n"
                f"Command: `python benchmarks/chaos.py {' '.join(sys.argv[1:])}`\n\n{text}\n"
            )


if __name__ == "__main__":
    main()
