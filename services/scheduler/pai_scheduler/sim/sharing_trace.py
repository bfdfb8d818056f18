"""A seeded synthetic trace of a GPU-sharing cluster: a node inventory and a workload of single pods and a few
gangs, with the shape of the published production traces of such clusters (Alibaba's GPU-sharing trace,
as studied by Weng et al., "Beware of Fragmentation", USENIX ATC '23).

Cluster (defaults: 1,500 nodes): a fifth of the nodes have no GPU (CPU-only); the others carry 1, 2, 4 or
8 GPUs of one of several models (about 5.2 GPUs per GPU node on average, so about 6,200 GPUs), 96 cores
and 768 GiB each; CPU-only nodes have 64 or 96 cores. Racks group 16 nodes.

Workload (defaults: 10,000 jobs): arrivals one per second, in the order of the file; per job:

* no GPU (12%): 2-32 cores, for the CPU-only nodes (or GPU nodes' spare CPU);
* a share of one GPU (36%): 0.1 .. 0.9 of a GPU, small shares more common;
* 1 GPU (37%), 2 (6%), 4 (5%), 8 (3%) on one pod, and a few gangs of 2 pods of 8 (1%);
* a quarter of the GPU jobs name one GPU model, one in twenty a list of two;
* CPU and memory in proportion to the GPUs asked (2-8 cores and 8-32 GiB per GPU), never above a GPU's
  share of its node (as OpenPAI's SKUs allot them), so that the GPU demand is what the trace measures.

The mean demand is about 1.2 GPUs per job: 10,000 jobs arrive about twice the capacity of 1,500 nodes, so
a replay without departures crosses every level from 50% to 130% of arrived demand. Everything comes from
one ``random.Random(seed)``: the same arguments always give the same files.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pai_scheduler.sim.jobs import SimJob

# (model, weight among GPU nodes, GPU counts per node with weights)
MODELS: tuple[tuple[str, float, tuple[tuple[int, float], ...]], ...] = (
    ("V100", 0.35, ((8, 0.8), (4, 0.2))),
    ("A10", 0.20, ((1, 0.2), (2, 0.3), (4, 0.5))),
    ("T4", 0.20, ((2, 0.3), (4, 0.7))),
    ("P100", 0.13, ((2, 0.4), (4, 0.6))),
    ("A100", 0.12, ((8, 1.0),)),
)
GPU_NODE_CORES = 96
GPU_NODE_MEMORY_MB = 768 * 1024
# (tasks, gpu per task, weight); gpu -1 marks a share, drawn from SHARES.
JOB_MIX: tuple[tuple[int, float, float], ...] = (
    (1, 0.0, 0.12),
    (1, -1.0, 0.36),
    (1, 1.0, 0.37),
    (1, 2.0, 0.06),
    (1, 4.0, 0.05),
    (1, 8.0, 0.03),
    (2, 8.0, 0.01),
)
SHARES: tuple[tuple[float, float], ...] = (
    (0.1, 0.18),
    (0.2, 0.18),
    (0.25, 0.14),
    (0.3, 0.1),
    (0.4, 0.1),
    (0.5, 0.14),
    (0.6, 0.06),
    (0.7, 0.04),
    (0.8, 0.03),
    (0.9, 0.03),
)


@dataclass(frozen=True)
class SharingTraceSpec:
    nodes: int = 1500
    jobs: int = 10_000
    seed: int = 0
    cpu_only: float = 0.2  # fraction of the nodes without GPUs
    rack_size: int = 16
    one_model: float = 0.25  # GPU jobs naming one model
    two_models: float = 0.05  # GPU jobs naming a list of two
    interval_s: float = 1.0  # between arrivals
    duration_s: float = 3600.0  # every job's run time (a no-departure replay never ends one)
    vc: str = "default"


@dataclass(frozen=True)
class InventoryNode:
    name: str
    model: str  # "" for a CPU-only node
    gpus: int
    cpu: int
    memory_mb: int
    rack: str


def cluster(spec: SharingTraceSpec, rng: random.Random | None = None) -> list[InventoryNode]:
    """The nodes, GPU nodes first (in racks of ``rack_size``), then the CPU-only ones."""
    if spec.nodes < 1 or not 0 <= spec.cpu_only < 1 or spec.rack_size < 1:
        raise ValueError("nodes must be >= 1, cpu_only in [0, 1), rack_size >= 1")
    rng = rng or random.Random(spec.seed)
    n_cpu = round(spec.nodes * spec.cpu_only)
    n_gpu = spec.nodes - n_cpu
    width = len(str(spec.nodes - 1))
    out: list[InventoryNode] = []
    for i in range(n_gpu):
        model, _, counts = rng.choices(MODELS, [w for _, w, _ in MODELS])[0]
        gpus = rng.choices([c for c, _ in counts], [w for _, w in counts])[0]
        out.append(
            InventoryNode(
                f"g{i:0{width}d}", model, gpus, GPU_NODE_CORES, GPU_NODE_MEMORY_MB, f"rg{i // spec.rack_size}"
            )
        )
    for i in range(n_cpu):
        cores = rng.choice((64, 96))
        out.append(InventoryNode(f"c{i:0{width}d}", "", 0, cores, cores * 4096, f"rc{i // spec.rack_size}"))
    return out


def inventory_csv(nodes: list[InventoryNode]) -> str:
    rows = ["node,leaf_type,leaf_count,cpu,memory_mb,rack"]
    rows += [f"{n.name},{n.model},{n.gpus},{n.cpu},{n.memory_mb},{n.rack}" for n in nodes]
    return "\n".join(rows) + "\n"


def workload(
    spec: SharingTraceSpec, nodes: list[InventoryNode], rng: random.Random | None = None
) -> list[SimJob]:
    """The jobs, in arrival order. A job naming models names only models some node has."""
    if spec.jobs < 0:
        raise ValueError("jobs must be >= 0")
    rng = rng or random.Random(spec.seed + 1)
    models = sorted({n.model for n in nodes if n.model})
    # The largest pod each model can hold, and the CPU and memory one GPU of it is allotted (the smallest
    # per-GPU share over its nodes: what an OpenPAI SKU of that model gives a GPU).
    biggest = {m: max(n.gpus for n in nodes if n.model == m) for m in models}
    per_gpu_cpu = min((n.cpu / n.gpus for n in nodes if n.gpus), default=8.0)
    per_gpu_mem = min((n.memory_mb // n.gpus for n in nodes if n.gpus), default=32768)
    width = len(str(max(spec.jobs - 1, 0)))
    jobs: list[SimJob] = []
    for i in range(spec.jobs):
        tasks, gpu, _ = rng.choices(JOB_MIX, [w for _, _, w in JOB_MIX])[0]
        if gpu < 0:
            gpu = rng.choices([s for s, _ in SHARES], [w for _, w in SHARES])[0]
        types: tuple[str, ...] = ()
        if gpu > 0 and models:
            fitting = [m for m in models if biggest[m] >= gpu]
            roll = rng.random()
            if roll < spec.one_model and fitting:
                types = (rng.choice(fitting),)
            elif roll < spec.one_model + spec.two_models and len(fitting) >= 2:
                types = tuple(rng.sample(fitting, 2))
        if gpu == 0:
            cpu = float(rng.choice((2, 4, 8, 16, 32)))
            memory = int(cpu) * rng.choice((2048, 4096))
        else:
            per_cpu = min(float(rng.choice((2, 4, 6, 8))), per_gpu_cpu)
            cpu = max(1.0, math.floor(gpu * per_cpu))
            memory = max(1024, int(gpu * min(rng.choice((8192, 16384, 32768)), per_gpu_mem)))
        jobs.append(
            SimJob(
                job_id=f"j{i:0{width}d}",
                submit_time=round(i * spec.interval_s, 3),
                duration=spec.duration_s,
                vc=spec.vc,
                priority=100,
                tasks=tasks,
                gpu_per_task=gpu,
                gpu_types=types,
                cpu_per_task=cpu,
                memory_mb_per_task=memory,
            )
        )
    return jobs


def generate(spec: SharingTraceSpec) -> tuple[str, list[SimJob]]:
    """(inventory CSV text, jobs) for ``spec``."""
    rng = random.Random(spec.seed)
    nodes = cluster(spec, rng)
    return inventory_csv(nodes), workload(spec, nodes, rng)
