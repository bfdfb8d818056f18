"""Auth benchmark: token verifications per second through the gateway, and login latency.

Starts the embedded platform (as ``pai up`` does) with the auth service's production argon2id cost, then
measures, over HTTP on the loopback interface:

- ``argon2_hash_ms``: one argon2id hash with the chosen cost, in this process (p50 of ``--hashes``);
- ``login_ms`` p50/p95: ``POST /api/v2/authn/basic/login`` one after another (one argon2id verify each);
- ``login_concurrent_ms`` p50/p95 and ``logins_per_s``: the same at ``--concurrency``;
- ``verify_cached_per_s``: ``GET /api/v2/tokens/check`` with one token, answered from the gateway's cache;
- ``verify_uncached_per_s``: the same with a fresh application token per request, so every request costs
  the gateway one ``auth.verify`` RPC (signature, token record, user and groups read).

Prints the figures, then one JSON object on the last line. ``--record`` appends a section to RESULTS.md.

Run: ``python benchmarks/auth.py [--requests 2000] [--concurrency 16] [--record]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher
from machine import describe, machine

from pai_auth.shell import AuthSettings
from pai_cli.platform import Platform

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
PASSWORD = "bench-admin-password"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def argon2_cost() -> dict[str, int]:
    s = AuthSettings()
    return {
        "time_cost": s.argon2_time_cost,
        "memory_kib": s.argon2_memory_kib,
        "parallelism": s.argon2_parallelism,
    }


def hash_ms(n: int) -> float:
    cost = argon2_cost()
    hasher = PasswordHasher(
        time_cost=cost["time_cost"], memory_cost=cost["memory_kib"], parallelism=cost["parallelism"]
    )
    times = []
    for _ in range(n):
        started = time.perf_counter()
        hasher.hash("a-password-of-ordinary-length")
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def timed_login(c: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    r = await c.post("/api/v2/authn/basic/login", json={"username": "admin", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return (time.perf_counter() - started) * 1000


async def rate(c: httpx.AsyncClient, tokens: list[str], concurrency: int) -> float:
    """Requests per second of ``GET /api/v2/tokens/check``, one request per entry of ``tokens``."""
    queue = list(tokens)

    async def worker() -> None:
        while queue:
            token = queue.pop()
            r = await c.get("/api/v2/tokens/check", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(tokens) / (time.perf_counter() - started)


async def measure(p: Platform, args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    async with httpx.AsyncClient(base_url=p.url, timeout=60, limits=limits) as c:
        await timed_login(c)  # warm-up
        sequential = [await timed_login(c) for _ in range(args.logins)]
        started = time.perf_counter()
        concurrent = await asyncio.gather(*(timed_login(c) for _ in range(args.logins)))
        logins_per_s = args.logins / (time.perf_counter() - started)
        r = await c.post("/api/v2/authn/basic/login", json={"username": "admin", "password": PASSWORD})
        token = r.json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        fresh: list[str] = []
        for _ in range(args.requests):
            app = await c.post("/api/v2/tokens/application", headers=headers)
            fresh.append(app.json()["token"])
        await rate(c, [token] * 50, args.concurrency)  # warm-up
        cached = await rate(c, [token] * args.requests, args.concurrency)
        uncached = await rate(c, fresh, args.concurrency)
    return {
        "argon2": argon2_cost(),
        "argon2_hash_ms": round(hash_ms(args.hashes), 1),
        "login_ms": {
            "p50": round(percentile(sequential, 0.5), 1),
            "p95": round(percentile(sequential, 0.95), 1),
        },
        "login_concurrent_ms": {
            "p50": round(percentile(list(concurrent), 0.5), 1),
            "p95": round(percentile(list(concurrent), 0.95), 1),
        },
        "logins_per_s": round(logins_per_s, 1),
        "verify_cached_per_s": round(cached),
        "verify_uncached_per_s": round(uncached),
        "requests": args.requests,
        "concurrency": args.concurrency,
    }


def record(figures: dict[str, Any]) -> None:
    a = figures["argon2"]
    lines = [
        "",
        f"## Auth: token verification and login ({dt.date.today().isoformat()}, `benchmarks/auth.py`)",
        "",
        f"Machine: {describe()}. Embedded platform, loopback HTTP, {figures['requests']} requests at"
        f" concurrency {figures['concurrency']}. argon2id cost: t={a['time_cost']},"
        f" m={a['memory_kib'] // 1024} MiB, p={a['parallelism']} (OWASP's recommended minimum)."
        f" Load average at the end: {figures['load_avg_1m']} (the machine is shared).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| argon2id hash (ms, p50, in process) | {figures['argon2_hash_ms']} |",
        f"| login, one at a time (ms) p50 / p95 | {figures['login_ms']['p50']}"
        f" / {figures['login_ms']['p95']} |",
        f"| login, concurrent (ms) p50 / p95 | {figures['login_concurrent_ms']['p50']}"
        f" / {figures['login_concurrent_ms']['p95']} |",
        f"| logins per second (concurrent) | {figures['logins_per_s']} |",
        f"| token checks per second, gateway cache hit | {figures['verify_cached_per_s']} |",
        f"| token checks per second, every one an auth.verify RPC | {figures['verify_uncached_per_s']} |",
        "",
    ]
    with RESULTS_FILE.open("a") as f:
        f.write("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--logins", type=int, default=30)
    parser.add_argument("--hashes", type=int, default=10)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pai-bench-auth-") as tmp:
        p = Platform(
            data_dir=Path(tmp), nodes=1, gpus_per_node=1, port=0, extra_env={"PAI_ADMIN_PASSWORD": PASSWORD}
        )
        p.start()
        try:
            figures = asyncio.run(measure(p, args))
        finally:
            p.stop()
    figures["machine"] = machine()
    figures["load_avg_1m"] = round(os.getloadavg()[0], 1)
    for key, value in figures.items():
        print(f"{key}: {value}")
    if args.record:
        record(figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
