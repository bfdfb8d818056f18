"""Hypothesis against every message consumer of the running platform: any body, any headers, any subject.

The platform runs as `pai up` runs it (every service and two node agents as processes, a real NATS server
with JetStream and a real MongoDB-wire server). Each example publishes a few messages on the subjects the
platform's durable consumers read: bodies the contract accepts (drawn from proto/ at the edges), bodies
broken in one place, any JSON, bytes that are not JSON, missing or wrong CloudEvents headers, a type that
does not match its subject. After each example:

- every durable consumer drains: nothing pending, nothing waiting for an ack (no message blocks a stream);
- every process is the one that was started (no crash, hence no crash loop);
- each malformed message sits in the dead letters of every consumer that received it, with the error.

At the end a real job still runs to SUCCEEDED through the API. ``PAI_FUZZ_EXAMPLES`` sets how many
examples run (default 30, with a fixed seed so that `./dev test` is repeatable and bounded).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pai_cli.platform import Platform
from pai_common.bus import COMMANDS_STREAM, DEAD_LETTER_STREAM, EVENTS_STREAM, Bus
from pai_common.envelope import H_ID, H_MSG_ID, H_SOURCE, H_SPECVERSION, H_TYPE, MalformedMessage, decode
from tests.fuzz import json_strategies as js

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("PAI_FUZZ_EXAMPLES", "30"))
PASSWORD = "fuzz-admin-pw"
NODES = ("node-0", "node-1")
# A hang guard only: a consumer that has not drained by then is blocked.
DRAIN_GUARD_S = 120.0
FUZZ_HEADER = "pai-fuzz-id"
CONTRACT = js.contract()
# What the examples exercised: a fuzz that only ever sent what every consumer refuses would be blind.
STATS = {"valid": 0, "malformed": 0, "dead_lettered": 0}


def _subject(schema: dict[str, Any], node: str) -> str:
    return str(schema["x-pai-subject"]).replace("{node}", node)


@dataclass(frozen=True)
class Sent:
    fuzz_id: str
    subject: str
    headers: dict[str, str]
    payload: bytes

    @property
    def malformed(self) -> bool:
        try:
            decode(self.headers, self.payload)
        except MalformedMessage:
            return True
        return False


@st.composite
def messages(draw: st.DrawFn) -> Sent:
    kind = draw(st.sampled_from(sorted(CONTRACT)))
    schema = CONTRACT[kind]
    subject = _subject(schema, draw(st.sampled_from(NODES)))
    body_kind = draw(st.sampled_from(["valid", "valid", "mutated", "json", "bytes"]))
    if body_kind == "valid":
        body = draw(js.valid(schema))
    elif body_kind == "mutated":
        body = draw(js.mutated(schema))
    else:
        body = draw(js.anything())
    if kind == "runtime.launch" and isinstance(body, dict):
        # A node agent runs what a launch says: whatever else is drawn, the program itself stays harmless.
        body["entrypoint"] = "exit 0"
    payload = draw(st.binary(max_size=64)) if body_kind == "bytes" else json.dumps(body).encode()
    fuzz_id = uuid.uuid4().hex
    headers = {
        H_ID: fuzz_id,
        H_MSG_ID: fuzz_id,
        H_SOURCE: "pai/fuzz",
        H_TYPE: kind,
        H_SPECVERSION: "1.0",
        "content-type": "application/json",
    }
    header_kind = draw(st.sampled_from(["right", "right", "right", "missing", "other type", "bad version"]))
    if header_kind == "missing":
        headers.pop(draw(st.sampled_from([H_ID, H_TYPE, H_SOURCE, H_SPECVERSION])))
    elif header_kind == "other type":
        headers[H_TYPE] = draw(st.sampled_from([*sorted(CONTRACT), "no.such.type"]))
    elif header_kind == "bad version":
        headers[H_SPECVERSION] = "0.3"
    headers[FUZZ_HEADER] = fuzz_id
    return Sent(fuzz_id, subject, headers, payload)


def _matches(pattern: str, subject: str) -> bool:
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(want) == len(got)


@dataclass
class Fuzzed:
    platform: Platform
    pids: dict[str, int]
    api: httpx.Client


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    platform = Platform(
        data_dir=tmp_path_factory.mktemp("fuzz"),
        nodes=len(NODES),
        gpus_per_node=2,
        port=0,
        extra_env={"PAI_ADMIN_PASSWORD": PASSWORD},
    )
    platform.start()
    try:
        login = httpx.post(
            f"{platform.url}/api/v2/authn/basic/login",
            json={"username": "admin", "password": PASSWORD},
            timeout=30,
        )
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['token']}"}
        pids = {name: child.proc.pid for name, child in platform.children.items() if child.proc}
        with httpx.Client(base_url=platform.url, timeout=30, headers=headers) as api:
            yield Fuzzed(platform, pids, api)
    finally:
        platform.stop()


async def _publish_and_drain(url: str, batch: list[Sent]) -> dict[str, list[str]]:
    """Publish the batch, wait until every durable consumer drained; answer who dead-lettered what."""
    bus = await Bus.connect(url, "fuzz")
    try:
        consumers = {}
        for stream in (EVENTS_STREAM, COMMANDS_STREAM):
            for info in await bus.js.consumers_info(stream):
                config = info.config
                filters = list(config.filter_subjects or []) or [config.filter_subject or ">"]
                consumers[str(info.name)] = (stream, filters)
        first_dead = (await bus.js.stream_info(DEAD_LETTER_STREAM)).state.last_seq + 1
        for sent in batch:
            await bus.publish_raw(sent.subject, sent.headers, sent.payload)
        deadline = time.monotonic() + DRAIN_GUARD_S
        while True:
            busy = []
            for name, (stream, _) in consumers.items():
                info = await bus.js.consumer_info(stream, name)
                if info.num_pending or info.num_ack_pending:
                    busy.append(f"{name}: {info.num_pending} pending, {info.num_ack_pending} unacked")
            if not busy:
                break
            assert time.monotonic() < deadline, f"consumers blocked after {DRAIN_GUARD_S:g}s: {busy}"
            await asyncio.sleep(0.2)
        dead: dict[str, list[str]] = {}
        seq = first_dead
        while True:
            try:
                raw = await bus.js.get_msg(DEAD_LETTER_STREAM, seq, subject="pai.dlq.>", next=True)
            except Exception:
                break
            headers = raw.headers or {}
            if headers.get(FUZZ_HEADER):
                assert headers.get("pai-error"), f"dead letter {raw.seq} has no error"
                dead.setdefault(headers[FUZZ_HEADER], []).append(str(headers.get("pai-consumer")))
            seq = int(raw.seq or seq) + 1
        # Who should have received each message, by the consumers' filters.
        dead["__receivers__"] = [
            f"{sent.fuzz_id}={name}"
            for sent in batch
            for name, (_, filters) in consumers.items()
            if any(_matches(f, sent.subject) for f in filters)
        ]
        return dead
    finally:
        await bus.close()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("PAI_FUZZ_RANDOM") != "1",
    # Bounded for ./dev test: a failure is reported as found, not shrunk against the running platform.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(batch=st.lists(messages(), min_size=1, max_size=4))
def test_no_message_crashes_blocks_or_vanishes(fuzzed: Fuzzed, batch: list[Sent]) -> None:
    # As the platform's operator: the fuzz publishes what no service's own user may.
    dead = asyncio.run(_publish_and_drain(fuzzed.platform.bus_url("operator"), batch))
    receivers: dict[str, set[str]] = {}
    for pair in dead.pop("__receivers__"):
        fuzz_id, name = pair.split("=", 1)
        receivers.setdefault(fuzz_id, set()).add(name)
    STATS["dead_lettered"] += sum(len(v) for v in dead.values())
    for sent in batch:
        STATS["malformed" if sent.malformed else "valid"] += 1
        if sent.malformed:
            # Every consumer that received it kept it, with why, instead of dropping it.
            assert set(dead.get(sent.fuzz_id, [])) == receivers.get(sent.fuzz_id, set()), sent
    now = {name: child.proc.pid for name, child in fuzzed.platform.children.items() if child.proc}
    died = [name for name, child in fuzzed.platform.children.items() if not child.running]
    assert not died and now == fuzzed.pids, f"processes died or restarted: {died}"


def test_the_platform_still_runs_jobs_after_the_fuzzing(fuzzed: Fuzzed) -> None:
    assert STATS["valid"] and STATS["malformed"] and STATS["dead_lettered"], STATS
    name = f"after-fuzz-{uuid.uuid4().hex[:8]}"
    job = f"""protocolVersion: 2
name: {name}
type: job
prerequisites:
  - {{type: dockerimage, uri: "python:3.11-slim", name: image}}
taskRoles:
  main:
    instances: 1
    dockerImage: image
    resourcePerInstance: {{gpu: 1, cpu: 1, memoryMB: 512}}
    commands: ["echo still-alive"]
"""
    r = fuzzed.api.post("/api/v2/jobs", content=job, headers={"Content-Type": "text/yaml"})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 300
    state = ""
    while time.monotonic() < deadline:
        state = fuzzed.api.get(f"/api/v2/jobs/admin~{name}").json()["jobStatus"]["state"]
        if state in {"SUCCEEDED", "FAILED", "STOPPED"}:
            break
        time.sleep(0.5)
    assert state == "SUCCEEDED"
    assert not fuzzed.platform.dead_children()


def test_strategies_draw_bodies_the_contract_accepts() -> None:
    """The generator's 'valid' bodies are valid for the platform's own models (else the fuzz is blind)."""
    from pai_common.contract.commands import COMMANDS_BY_TYPE
    from pai_common.contract.events import EVENTS_BY_TYPE

    models = {**EVENTS_BY_TYPE, **COMMANDS_BY_TYPE}
    assert set(models) == set(CONTRACT)

    # No shrinking: a failure is reported as found (shrinking one of these bodies ran past five minutes).
    @settings(max_examples=5, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate])
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        for kind, schema in CONTRACT.items():
            models[kind].model_validate_json(json.dumps(data.draw(js.valid(schema))))

    check()
