"""A notifier of finished jobs: an extension of the platform that knows it only through its contract.

It reads `job.completed` events with a durable consumer of its own on the events stream, checks each body
against the published schema (proto/events/job.completed.json), and for each finished job appends one JSON
line to a file and, if asked, POSTs it to a webhook. It imports nothing of the platform: it needs a NATS
client, a JSON Schema validator and the files in proto/ (read proto/README.md).

Credentials: the platform's read-only extension user. Under `pai up` its URL is in
`<data dir>/bus/extension.url`; that user may create and read its own consumers on PAI_EVENTS, and do
nothing else (no publishing, no commands, no other consumers).

    python notifier.py --credentials .pai/bus/extension.url --out finished-jobs.jsonl

Delivery is at least once: a line is written only for an event id not seen before (the ids are in the
file), then the event is acknowledged, so a restart or a redelivery never notifies twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

HERE = Path(__file__).resolve().parent
PROTO = HERE.parents[2] / "proto"
STREAM = "PAI_EVENTS"  # proto/README.md: events are on the JetStream stream PAI_EVENTS
EVENT = "job.completed"


def load_schema(proto: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((proto / "events" / f"{EVENT}.json").read_text())
    return schema


def seen_ids(out: Path) -> set[str]:
    if not out.exists():
        return set()
    return {json.loads(line)["eventId"] for line in out.read_text().splitlines() if line.strip()}


def notification(headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    return {
        "eventId": headers["ce-id"],
        "job": body["job_key"],
        "state": body["state"],
        "exitCode": body["exit_code"],
        "completedAt": body["completed_at"],
    }


def say(text: str) -> None:
    print(f"notifier: {text}", file=sys.stderr, flush=True)


def append(out: Path, note: dict[str, Any]) -> None:
    with out.open("a") as f:
        f.write(json.dumps(note) + "\n")


def post(webhook: str, note: dict[str, Any]) -> None:
    request = urllib.request.Request(
        webhook, data=json.dumps(note).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


async def run(args: argparse.Namespace) -> int:
    url = args.nats_url or Path(args.credentials).read_text().strip()
    user = urlsplit(url).username or ""
    schema = load_schema(Path(args.proto))
    validator = jsonschema.Draft202012Validator(schema)
    out = Path(args.out)
    seen = seen_ids(out)
    # Stopped cleanly whenever asked, also while still connecting.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The platform gives each user an inbox of its own: replies to this client arrive under _INBOX.<user>.
    nc = await nats.connect(
        url, name=f"extension-{args.durable}", inbox_prefix=f"_INBOX.{user}" if user else "_INBOX"
    )
    js = nc.jetstream()
    config = ConsumerConfig(
        durable_name=args.durable,
        name=args.durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject=schema["x-pai-subject"],
        ack_wait=30,
    )
    await js.add_consumer(STREAM, config=config)
    sub = await js.pull_subscribe_bind(durable=args.durable, stream=STREAM)
    print(
        f"notifier: reading {schema['x-pai-subject']} as {user or 'anonymous'}", file=sys.stderr, flush=True
    )
    while not stop.is_set():
        try:
            msgs = await sub.fetch(16, timeout=1)
        except (nats.errors.TimeoutError, TimeoutError):
            continue  # nothing finished within the second
        for msg in msgs:
            headers = dict(msg.headers or {})
            try:
                body = json.loads(msg.data)
                validator.validate(body)
            except (ValueError, jsonschema.ValidationError) as exc:
                # Not what the contract describes: never retried, never notified.
                say(f"skipped a malformed {EVENT}: {str(exc)[:200]}")
                await msg.term()
                continue
            note = notification(headers, body)
            if note["eventId"] not in seen:
                if args.webhook:
                    post(args.webhook, note)
                append(out, note)
                seen.add(note["eventId"])
            await msg.ack()
    await nc.close()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--credentials", default=".pai/bus/extension.url", help="file holding the NATS URL")
    parser.add_argument("--nats-url", help="the NATS URL with credentials (instead of --credentials)")
    parser.add_argument("--proto", default=str(PROTO), help="the platform's proto/ folder")
    parser.add_argument("--durable", default="job-notifier", help="this extension's consumer name")
    parser.add_argument("--out", default="finished-jobs.jsonl", help="one JSON line per finished job")
    parser.add_argument("--webhook", help="also POST each notification here")
    raise SystemExit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
