"""What `pai up` costs to get ready: each process's CPU time and RSS at the moment it says "ready".

Starts `pai up --simulate` (2 nodes x 4 GPUs unless told) on a fresh data dir, waits for its "ready in"
line, reads utime + stime and the resident set of every process of the platform from /proc, prints one
row per process and the sums (JSON last), then stops it with SIGINT. CPU seconds depend little on other
work on the machine; the wall-clock time to ready does (the load average is printed beside it).

With ``--jobs N``, N trivial jobs (``e2e.JOB_TEMPLATE``) are then submitted over HTTP by ``--clients``
clients as the admin, and once every one is final the same processes are read again: each row gets its RSS
after the load and its growth, and the JSON the sum after the load (what grows after a run: issue 17).

    python benchmarks/ready_footprint.py [--nodes 2] [--gpus-per-node 4] [--port 9391] [--jobs 200]
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAI = ROOT / ".venv" / "bin" / "pai"
READY_S = 120.0
LOAD_TIMEOUT_S = 600.0


def footprint(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) and RSS in MiB of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu, rss


def descendants(root: int) -> list[int]:
    """Every process under ``root`` (the supervisor's children and theirs), ``root`` included."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def read_rows(pids: list[int]) -> list[dict[str, Any]]:
    rows = []
    for pid in pids:
        try:
            cpu, rss = footprint(pid)
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # ended meanwhile
        rows.append({"pid": pid, "cpu_s": round(cpu, 2), "rss_mib": round(rss, 1), "cmd": command})
    return rows


def run_jobs(data_dir: Path, port: int, jobs: int, clients: int) -> dict[str, int]:
    """Submit ``jobs`` trivial jobs from ``clients`` clients and wait until each is final; their states."""
    import httpx
    from e2e import JOB_TEMPLATE
    from load_phases import submit_jobs, wait_final

    saved = json.loads((data_dir / "admin-credentials.json").read_text())
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}", timeout=60.0, limits=limits, trust_env=False
    ) as client:
        login = {"username": saved["username"], "password": saved["password"]}
        token = client.post("/api/v2/authn/basic/login", json=login).raise_for_status().json()["token"]
        client.headers["Authorization"] = f"Bearer {token}"
        run = f"footprint-{int(time.time())}"
        names = [f"{run}-{i:05d}" for i in range(jobs)]
        requests = submit_jobs(
            client, names, clients, lambda n: JOB_TEMPLATE.format(name=n, gpu=0, vc="default")
        )
        accepted = {r.name for r in requests if r.accepted}
        rows: dict[str, dict[str, Any]] = {}
        if not wait_final(client, saved["username"], accepted, rows, LOAD_TIMEOUT_S, 0.5, lambda: []):
            sys.exit(f"the jobs were not final within {LOAD_TIMEOUT_S:.0f} s")
    states: dict[str, int] = {"refused": jobs - len(accepted)}
    for row in rows.values():
        states[str(row["state"])] = states.get(str(row["state"]), 0) + 1
    return states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--gpus-per-node", type=int, default=4)
    parser.add_argument("--port", type=int, default=9391)
    parser.add_argument("--jobs", type=int, default=0, help="trivial jobs to run after ready (default none)")
    parser.add_argument("--clients", type=int, default=8, help="clients submitting them (default 8)")
    args = parser.parse_args()
    after: dict[int, float] = {}
    states: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="pai-ready-") as tmp:
        argv = [str(PAI), "up", "--port", str(args.port), "--data-dir", str(Path(tmp) / "pai")]
        argv += ["--nodes", str(args.nodes), "--gpus-per-node", str(args.gpus_per_node), "--simulate"]
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        said = None
        while time.perf_counter() - started < READY_S:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("ready in"):
                said = line.strip()
                break
        try:
            if said is None:
                sys.exit(f"pai up did not say it was ready within {READY_S:.0f} s")
            rows = read_rows(descendants(proc.pid))
            if args.jobs:
                states = run_jobs(Path(tmp) / "pai", args.port, args.jobs, args.clients)
                after = {r["pid"]: r["rss_mib"] for r in read_rows([r["pid"] for r in rows])}
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
    for row in sorted(rows, key=lambda r: -r["cpu_s"]):
        grown = ""
        if row["pid"] in after:
            grown = f" -> {after[row['pid']]:7.1f} MiB ({after[row['pid']] - row['rss_mib']:+6.1f})"
        print(f"{row['cpu_s']:6.2f} s {row['rss_mib']:7.1f} MiB{grown}  {row['cmd'][:100]}")
    summary: dict[str, Any] = {
        "said": said,
        "load": [round(x, 2) for x in os.getloadavg()],
        "processes": len(rows),
        "cpu_s": round(sum(r["cpu_s"] for r in rows), 2),
        "rss_mib": round(sum(r["rss_mib"] for r in rows), 1),
    }
    if args.jobs:
        summary["jobs"] = states
        summary["rss_mib_after_jobs"] = round(sum(after.values()), 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
