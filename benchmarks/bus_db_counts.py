"""Counts that do not depend on the machine's load: database round trips and bus messages.

``counts(mongo_urls, nats_url)`` reads every MongoDB-wire server's ``serverStatus`` (requests received)
and ``top`` (commands per database, so per service), and the JetStream streams' sequence numbers
(messages published as events and as commands). The difference over a phase divided by its jobs is what
one job costs in round trips and messages, whatever the load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import nats
from pymongo import MongoClient

STREAMS = ("PAI_EVENTS", "PAI_COMMANDS", "PAI_DEAD_LETTERS")


def mongo_counts(url: str) -> dict[str, float]:
    with MongoClient(url, serverSelectionTimeoutMS=10_000) as client:
        status = client.admin.command("serverStatus")
        out = {"mongo requests": float(status.get("network", {}).get("numRequests", 0))}
        try:
            top = client.admin.command("top").get("totals", {})
        except Exception:  # a real mongod without the privilege: the total is enough
            top = {}
        for namespace, sections in top.items():
            if not isinstance(sections, dict) or "." not in namespace:
                continue
            db = namespace.split(".", 1)[0]
            key = f"mongo {db}"
            out[key] = out.get(key, 0.0) + float(sections.get("total", {}).get("count", 0))
        return out


async def _stream_counts(url: str) -> dict[str, float]:
    nc = await nats.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream()
        out: dict[str, float] = {}
        for name in STREAMS:
            try:
                info = await js.stream_info(name)
            except Exception:
                continue
            out[f"stream {name}"] = float(info.state.last_seq)
        return out
    finally:
        await nc.close()


def counts(mongo_urls: Sequence[str], nats_url: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for url in mongo_urls:
        for key, value in mongo_counts(url).items():
            out[key] = out.get(key, 0.0) + value
    if nats_url:
        out.update(asyncio.run(_stream_counts(nats_url)))
    return out
