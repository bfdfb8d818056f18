"""Messages the platform's durable consumers handle per job: a count, so it does not depend on the load.

Starts the embedded platform (``pai_cli.platform.Platform``), submits ``--jobs`` trivial CPU jobs through
the REST API v2, waits until they are final, and reads ``pai_bus_messages_total`` from every process's
``/metrics`` before and after: the difference per job, by consumer, is what each job costs the bus
consumers. ``messages_per_job`` counts every message delivered; ``in_transactions_per_job`` leaves out
those a consumer acks without a transaction (outcome ``ignored``: its ``acts_on`` has nothing to do for
them), so it counts the messages that each cost a transaction's work (batched or not). Prints one JSON
object; ``--record`` appends it with the machine to ``benchmarks/RESULTS.md``.

Run: ``python benchmarks/messages_per_job.py --jobs 20 [--record]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx
from machine import describe

from pai_cli.platform import Platform

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
PASSWORD = "messages-per-job"
FINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def handled(data_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    """pai_bus_messages_total of every process, summed by consumer: all of them, and those handled in a
    transaction (every outcome but "ignored"), from one scrape."""
    out: dict[str, float] = {}
    in_tx: dict[str, float] = {}
    for port_file in sorted((data_dir / "run").glob("*.json")):
        port = json.loads(port_file.read_text())["health_port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if line.startswith("pai_bus_messages_total{"):
                labels, value = line.rsplit(" ", 1)
                consumer = labels.split('consumer="', 1)[1].split('"', 1)[0]
                out[consumer] = out.get(consumer, 0.0) + float(value)
                if 'outcome="ignored"' not in labels:
                    in_tx[consumer] = in_tx.get(consumer, 0.0) + float(value)
    return out, in_tx


def run(jobs: int) -> dict[str, object]:
    data_dir = Path(tempfile.mkdtemp(prefix="pai-msgs-"))
    platform = Platform(data_dir=data_dir, port=0, extra_env={"PAI_ADMIN_PASSWORD": PASSWORD})
    platform.start()
    try:
        login = {"username": "admin", "password": PASSWORD}
        token = httpx.post(f"{platform.url}/api/v2/authn/basic/login", json=login, timeout=60).json()["token"]
        client = httpx.Client(base_url=platform.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        time.sleep(3)  # the nodes' registrations are handled
        before, before_tx = handled(data_dir)
        keys = []
        for i in range(jobs):
            name = f"msgs-{int(time.time() * 1000)}-{i}"
            text = (
                f"protocolVersion: 2\nname: {name}\ntype: job\ntaskRoles:\n  main:\n    instances: 1\n"
                "    resourcePerInstance: {gpu: 0, cpu: 1, memoryMB: 256}\n    commands: ['true']\n"
            )
            response = client.post("/api/v2/jobs", content=text, headers={"Content-Type": "text/yaml"})
            if response.status_code != 202:
                raise SystemExit(f"submission refused: {response.status_code} {response.text}")
            keys.append(f"admin~{name}")
        deadline = time.monotonic() + 600
        states: list[str] = []
        while time.monotonic() < deadline:
            states = [client.get(f"/api/v2/jobs/{k}").json()["jobStatus"]["state"] for k in keys]
            if all(s in FINAL for s in states):
                break
            time.sleep(1)
        time.sleep(12)  # the last events reach every consumer (the job list polls, the counters lag a batch)
        after, after_tx = handled(data_dir)
    finally:
        platform.stop()

    def per_job(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        return {k: round((a.get(k, 0) - b.get(k, 0)) / jobs, 2) for k in sorted(set(a) | set(b))}

    delivered, in_tx = per_job(after, before), per_job(after_tx, before_tx)
    return {
        "jobs": jobs,
        "final_states": sorted(set(states)),
        "messages_per_job": delivered,
        "total_per_job": round(sum(delivered.values()), 2),
        "in_transactions_per_job": in_tx,
        "total_in_transactions_per_job": round(sum(in_tx.values()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    figures = run(args.jobs)
    print(json.dumps(figures))
    if args.record:
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        tx: dict[str, float] = figures["in_transactions_per_job"]  # type: ignore[assignment]
        rows = "\n".join(
            f"| {k} | {v} | {tx.get(k, 0.0)} |"
            for k, v in figures["messages_per_job"].items()  # type: ignore[attr-defined]
        )
        with RESULTS_FILE.open("a", encoding="utf-8") as out:
            out.write(
                f"\n## {when} — messages handled per job, {args.jobs} jobs\n\n"
                f"Command: `python benchmarks/messages_per_job.py {shlex.join(sys.argv[1:])}`\n\n"
                f"Machine: {describe()}.\n\n| consumer | messages per job | of them in a transaction |\n"
                f"|---|---|---|\n{rows}\n"
                f"| **total** | **{figures['total_per_job']}** |"
                f" **{figures['total_in_transactions_per_job']}** |\n"
            )


if __name__ == "__main__":
    main()
