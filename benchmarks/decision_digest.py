"""A fingerprint of every decision the HiveD allocator makes on fixed workloads: proof that a refactoring
changed no decision.

    python benchmarks/decision_digest.py [--quick]

Replays, through ``pai-sim``'s engine and the ``hived`` policies, the 100,000-job workload of
``sim_replay.py`` (``--quick``: 10,000 jobs), ``examples/sim/jobs-500.csv`` under each hived policy, a
workload with GPU shares and CPU-only jobs on an inventory with CPU-only nodes, and the decision stream of
``benchmarks/scheduler.py`` (32 and 512 nodes). Every value an allocator call returns (``submit_all``,
``release``: placements, victims, queue reasons and positions) is hashed in call order with SHA-256, and so
is the final snapshot. Prints one line per scenario with its digest and decision count, then one JSON
object. Two runs that print the same digests made the same decisions, word for word.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import scheduler as scheduler_bench
import sim_replay

from pai_scheduler.hived import HivedAllocator
from pai_scheduler.sim.cluster import load_cluster
from pai_scheduler.sim.engine import simulate
from pai_scheduler.sim.jobs import parse_workload_csv
from pai_scheduler.sim.registry import make_policy
from pai_scheduler.sim.workloads import WorkloadSpec, generate

ROOT = Path(__file__).resolve().parent.parent
PLAIN = False  # --plain: the allocator without the request mix, decisions written as before the grace


class Recorder:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.calls = 0
        self.decisions = 0

    def add(self, what: str, value: Any) -> None:
        self.calls += 1
        if isinstance(value, list):
            self.decisions += len(value)
        text = repr(value)
        if PLAIN:
            # Decisions as they were written before the reclaim grace existed (its default says nothing).
            text = text.replace(", grace_s=0.0", "")
        self.hash.update(f"{what}:{text}\n".encode())


@contextmanager
def recording(rec: Recorder) -> Iterator[None]:
    """Wrap the allocator's commands on the class, whatever module defines them."""
    originals: dict[str, Callable[..., Any]] = {}
    for name in ("submit_all", "release", "set_node_health", "set_bad_leaves"):
        original = getattr(HivedAllocator, name)
        originals[name] = original

        def wrapper(self: Any, *args: Any, __name: str = name, __f: Any = original, **kw: Any) -> Any:
            out = __f(self, *args, **kw)
            rec.add(__name, out)
            return out

        setattr(HivedAllocator, name, wrapper)
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(HivedAllocator, name, original)


def sim(
    cluster_path: Path, jobs: Any, policy: str, departures: bool = True
) -> tuple[Recorder, dict[str, Any]]:
    rec = Recorder()
    cluster = load_cluster(cluster_path)
    with recording(rec):
        pol = make_policy(policy, cluster)
        result = simulate(pol, cluster.capacity, jobs, departures)
        alloc = getattr(pol, "_alloc", None)
        if alloc is not None:
            rec.add("snapshot", json.dumps(alloc.snapshot(), sort_keys=True))
    return rec, result.metrics


def scenarios(quick: bool) -> Iterator[tuple[str, Callable[[], Recorder]]]:
    n = 10_000 if quick else 100_000

    def replay() -> Recorder:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "inventory.csv"
            path.write_text(sim_replay.inventory(512))
            spec = WorkloadSpec(
                jobs=n, seed=0, capacity_gpus=4096, load=0.9, gpu_type="A100", max_job_gpus=4096
            )
            return sim(path, generate(spec), "hived")[0]

    yield f"sim_replay {n} jobs, hived", replay

    jobs500 = parse_workload_csv((ROOT / "examples/sim/jobs-500.csv").read_text())
    for policy in ("hived", "hived-strict", "hived-no-protect"):
        yield (
            f"jobs-500 on cluster-8x8, {policy}",
            lambda policy=policy: sim(ROOT / "examples/sim/cluster-8x8.yaml", jobs500, policy)[0],
        )

    def shares() -> Recorder:
        rows = ["node,leaf_type,leaf_count,cpu,memory_mb,rack"]
        rows += [f"g{i},V100,8,64,262144,r{i // 4}" for i in range(16)]
        rows += [f"c{i},,0,32,131072,cr{i // 4}" for i in range(8)]
        spec = WorkloadSpec(jobs=3000, seed=3, capacity_gpus=128, load=1.1, fractional=0.4)
        jobs = generate(spec)
        # Every 7th job asks for no GPU at all (CPU-only work).
        jobs = [j if i % 7 else replace(j, gpu_per_task=0.0) for i, j in enumerate(jobs)]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "inventory.csv"
            path.write_text("\n".join(rows) + "\n")
            rec = sim(path, jobs, "hived")[0]
            rec2 = sim(path, jobs, "hived", departures=False)[0]
        rec.hash.update(rec2.hash.digest())
        rec.decisions += rec2.decisions
        return rec

    yield "shares + CPU-only jobs, inventory with CPU nodes", shares

    for nodes in (32, 512):

        def bench(nodes: int = nodes) -> Recorder:
            rec = Recorder()
            with recording(rec):
                scheduler_bench.run(nodes, max(4000, 2 * nodes), 1)
            return rec

        yield f"benchmarks/scheduler.py decision stream, {nodes} nodes", bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10,000 jobs instead of 100,000 in the replay")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="plain HiveD order (mix_aware=False), to compare with digests taken before the request mix",
    )
    args = parser.parse_args(argv)
    if args.plain:
        global PLAIN
        PLAIN = True
        init = HivedAllocator.__init__

        def plain_init(self: Any, *a: Any, **kw: Any) -> None:
            if "mix_aware" in inspect.signature(init).parameters:
                kw["mix_aware"] = False
            init(self, *a, **kw)

        HivedAllocator.__init__ = plain_init  # type: ignore[method-assign]
    out = {}
    for name, run in scenarios(args.quick):
        rec = run()
        digest = rec.hash.hexdigest()
        out[name] = {"sha256": digest, "calls": rec.calls, "decisions": rec.decisions}
        print(f"{digest[:16]}  {rec.calls:>7} calls {rec.decisions:>8} decisions  {name}", flush=True)
    print(json.dumps({"benchmark": "decision_digest", "scenarios": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
