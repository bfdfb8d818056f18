"""CPU of the node agents per trivial task under ``pai up``: the agent's own, and its task supervisors'.

Starts the embedded platform (``pai_cli.platform.Platform``, as ``pai up`` does; ``--port``,
``--data-dir``), submits ``--jobs`` trivial jobs (one task running ``true``, no GPU) over HTTP from
``--clients`` clients, waits until every one is final, and reads each agent's counters in ``/proc``
before and after:

- ``own``: the agent process's utime + stime (its event loop, its database and bus clients, the files it
  writes, the forks it makes);
- ``children``: cutime + cstime, the CPU of the children it reaped: each task's supervisor and the
  supervisor's own children (``bash`` running the task's phases), as the kernel adds a reaped process's
  CPU and its reaped children's to its parent's;
- the whole platform's CPU (every process ``pai up`` started), for scale.

Figures are CPU-seconds per job, which load moves far less than wall time (a loaded machine still
lengthens them a little: cache misses, context switches). Run the same script with another checkout's
interpreter to measure that checkout (``/work/main/.venv/bin/python benchmarks/agent_cpu.py``): it
imports the platform from the interpreter's environment and only its helpers from this folder.

``--profile DIR``: py-spy records every agent (``--subprocesses``, so the supervisors too) in raw
(collapsed stack) form, one file per agent.

Run: ``python benchmarks/agent_cpu.py --jobs 200 --clients 8 [--port 9251] [--data-dir DIR]``; prints the
figures and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from load_phases import platform_phase
from machine import describe
from proc_stats import CLOCK_TICKS, load_average

from pai_cli.platform import Platform


def _stat(pid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def own_and_children(pid: int) -> tuple[float, float]:
    """(utime + stime, CPU of its children) of ``pid``, in seconds. Its children's: cutime + cstime (the
    children it reaped, and theirs), plus the whole count of each child still running (the agent's fork
    server, whose reaped supervisors reach the agent's count only when the server itself ends)."""
    fields = _stat(pid)
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    children = cutime + cstime
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            child = _stat(int(entry.name))
        except (OSError, ValueError):
            continue
        if child[1] == str(pid):
            children += sum(int(v) for v in child[11:15])
    return (utime + stime) / CLOCK_TICKS, children / CLOCK_TICKS


def count_exit_transactions(pai: Platform, nodes: list[str]) -> dict[str, int] | None:
    """Exits recorded and the transactions that recorded them (the distinct tokens ``exit_batch`` stamps
    on the runs it updates); None where the agents do not stamp them (code before the change)."""
    from pymongo import MongoClient

    url = pai.mongo_urls.get("runtime") or pai.mongo_url
    if not url:
        return None
    runs: list[dict[str, Any]] = []
    client: MongoClient[dict[str, Any]]
    with MongoClient(url) as client:
        for n in nodes:
            runs.extend(client["pai_runtime"][f"runs_{n}"].find({}, {"exit_report": 1}))
    tokens = [d["exit_report"] for d in runs if d.get("exit_report")]
    return {"exits": len(tokens), "transactions": len(set(tokens))} if tokens else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pai-agent-cpu-"))
    data_dir = args.data_dir or work / "platform"
    extra = {"PAI_RATE_LIMIT_SUBMIT_PER_HOUR": "0", "PAI_RATE_LIMIT_LIST_PER_MIN": "0"}
    pai = Platform(data_dir=data_dir, nodes=2, gpus_per_node=4, port=args.port, extra_env=extra)
    print(f"machine: {describe()}; load {load_average()}; python {sys.executable}", flush=True)
    profilers: list[subprocess.Popen[bytes]] = []
    try:
        pai.start(timeout_s=180.0)
        user, password = pai.admin_credentials()
        client = httpx.Client(base_url=pai.url, timeout=30.0, trust_env=False)
        token = client.post(
            "/api/v2/authn/basic/login", json={"username": user, "password": password}
        ).raise_for_status()
        client.headers["Authorization"] = f"Bearer {token.json()['token']}"
        agents = {n: c.proc.pid for n, c in pai.children.items() if n.startswith("node-") and c.proc}
        everything = {n: c.proc.pid for n, c in pai.children.items() if c.proc is not None}
        everything.update({s.name: s.proc.pid for s in pai.servers})
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            for name, pid in agents.items():
                out = args.profile / f"{name}.txt"
                cmd = [spy, "record", "--pid", str(pid), "--format", "raw", "--subprocesses", "-o", str(out)]
                profilers.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.0)
        before = {n: own_and_children(p) for n, p in agents.items()}
        result = platform_phase(
            client, label="agent-cpu", run_id=f"ac-{uuid.uuid4().hex[:6]}", jobs=args.jobs,
            concurrency=args.clients, pids=lambda: everything, alive=pai.dead_children,
            rss_mib=lambda: pai.rss_bytes() / 2**20, user=user, capacity=0,
        )  # fmt: skip
        after = {n: own_and_children(p) for n, p in agents.items()}
        exit_transactions = count_exit_transactions(pai, list(agents))
    finally:
        for p in profilers:
            p.send_signal(2)  # py-spy writes its file on SIGINT
        for p in profilers:
            p.wait(60)
        pai.stop()
    done = sum(1 for r in result.rows.values() if r.get("state") == "SUCCEEDED")
    own = sum(after[n][0] - before[n][0] for n in agents)
    children = sum(after[n][1] - before[n][1] for n in agents)
    # The platform's count reads each agent's own + reaped children only: what its fork server's children
    # spent is added from the agent's own_and_children.
    platform = sum(v for n, v in result.cpu_s.items() if n not in agents) + own + children
    figures = {
        "jobs": args.jobs,
        "succeeded": done,
        "agent_own_ms_per_job": round(own * 1000 / args.jobs, 1),
        "supervisors_ms_per_job": round(children * 1000 / args.jobs, 1),
        "agents_total_ms_per_job": round((own + children) * 1000 / args.jobs, 1),
        "platform_ms_per_job": round(platform * 1000 / args.jobs, 1),
        "exit_transactions": exit_transactions,
        "per_agent": {n: [round(after[n][i] - before[n][i], 2) for i in (0, 1)] for n in agents},
        "wall_s": result.wall_s,
        "load_before": result.load_before,
        "load_after": result.load_after,
    }
    for key, value in figures.items():
        print(f"{key}: {value}")
    print(json.dumps({"machine": describe(), **figures}))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if done == args.jobs else 1


if __name__ == "__main__":
    sys.exit(main())
