"""What `pai up` costs to get ready: each process's CPU time and RSS at the moment it says "ready".

Starts `pai up --simulate` (2 nodes x 4 GPUs unless told) on a fresh data dir, waits for its "ready in"
line, reads utime + stime and the resident set of every process of the platform from /proc, prints one
row per process and the sums (JSON last), then stops it with SIGINT. CPU seconds depend little on other
work on the machine; the wall-clock time to ready does (the load average is printed beside it).

    python benchmarks/ready_footprint.py [--nodes 2] [--gpus-per-node 4] [--port 9391]
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

ROOT = Path(__file__).resolve().parents[1]
PAI = ROOT / ".venv" / "bin" / "pai"
READY_S = 120.0


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--gpus-per-node", type=int, default=4)
    parser.add_argument("--port", type=int, default=9391)
    args = parser.parse_args()
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
            rows = []
            for pid in descendants(proc.pid):
                try:
                    cpu, rss = footprint(pid)
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue  # ended meanwhile
                rows.append({"pid": pid, "cpu_s": round(cpu, 2), "rss_mib": round(rss, 1), "cmd": command})
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
    for row in sorted(rows, key=lambda r: -r["cpu_s"]):
        print(f"{row['cpu_s']:6.2f} s {row['rss_mib']:7.1f} MiB  {row['cmd'][:100]}")
    summary = {
        "said": said,
        "load": [round(x, 2) for x in os.getloadavg()],
        "processes": len(rows),
        "cpu_s": round(sum(r["cpu_s"] for r in rows), 2),
        "rss_mib": round(sum(r["rss_mib"] for r in rows), 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
