"""What every service measures about itself, against a real NATS server and MongoDB-wire server: RPCs
answered (count, outcome, latency), metrics counted only for committed work, consumer lag, outbox backlog
and the scrape target each process announces; and which trace exporter the environment chooses."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from pai_common.bus import Bus
from pai_common.consumer import HandlerContext
from pai_common.contract.events import JobAttemptCompleted
from pai_common.contract.rpc import GetJobRequest, JobDetailReply
from pai_common.embedded import ServerProcess
from pai_common.envelope import Envelope
from pai_common.errors import NoJobError
from pai_common.service import ServiceApp
from pai_common.service_metrics import sample_once
from pai_common.settings import Settings
from pai_common.telemetry import TracingConfigError, choose_exporter


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def make_app(nats: ServerProcess, mongo: ServerProcess, data: Path) -> ServiceApp:
    settings = Settings(nats_url=nats.url, mongo_url=mongo.url, data_dir=data, nak_base_delay_s=0.05)
    return ServiceApp(f"m{uuid.uuid4().hex[:10]}", settings)


async def test_rpcs_are_counted_by_outcome_with_their_latency(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, tmp_path: Path
) -> None:
    app = make_app(fresh_nats, mongo_server, tmp_path)

    async def get_job(req: GetJobRequest) -> JobDetailReply:
        if req.job_key == "missing~job":
            raise NoJobError("gone")
        return JobDetailReply(detail={})

    app.rpc({GetJobRequest: get_job})
    await app.start()
    client = await Bus.connect(fresh_nats.url, "client")
    ok, missing = (
        value("pai_rpc_requests_total", endpoint="jobs.get", outcome="ok"),
        value("pai_rpc_requests_total", endpoint="jobs.get", outcome="NoJobError"),
    )
    seen = value("pai_rpc_request_duration_seconds_count", endpoint="jobs.get")
    try:
        await client.request(GetJobRequest(job_key="a~b"), JobDetailReply)
        with pytest.raises(NoJobError):
            await client.request(GetJobRequest(job_key="missing~job"), JobDetailReply)
    finally:
        await client.close()
        await app.stop()
    assert value("pai_rpc_requests_total", endpoint="jobs.get", outcome="ok") == ok + 1
    assert value("pai_rpc_requests_total", endpoint="jobs.get", outcome="NoJobError") == missing + 1
    assert value("pai_rpc_request_duration_seconds_count", endpoint="jobs.get") == seen + 2
    assert value("pai_build_info", version=_version(), python=_python()) == 1


def _version() -> str:
    from importlib import metadata

    return metadata.version("pai-common")


def _python() -> str:
    import sys

    return ".".join(str(p) for p in sys.version_info[:3])


async def test_only_committed_work_is_counted_and_lag_and_backlog_are_sampled(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, tmp_path: Path
) -> None:
    app = make_app(fresh_nats, mongo_server, tmp_path)
    counted: list[str] = []
    failures = {"n": 0}

    @app.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        assert isinstance(env.body, JobAttemptCompleted)
        ctx.on_commit(lambda: counted.append(env.body.job_key))  # type: ignore[union-attr]
        await ctx.db.seen.insert_one({"_id": env.id}, session=ctx.session)
        if env.body.job_key == "flaky~job" and failures["n"] < 2:
            failures["n"] += 1
            raise RuntimeError("not yet")  # the transaction aborts: nothing may be counted for it

    await app.start()
    try:
        await app.bus.publish_event(JobAttemptCompleted(job_key="a~job", attempt_id=0, exit_code=0))
        await app.bus.publish_event(JobAttemptCompleted(job_key="flaky~job", attempt_id=0, exit_code=0))
        for _ in range(1200):  # a guard, not a timing: the retries back off, and a loaded machine is slow
            if sorted(counted) == ["a~job", "flaky~job"]:
                break
            await asyncio.sleep(0.05)
        assert sorted(counted) == ["a~job", "flaky~job"]  # once each, the flaky one after its retries
        assert value("pai_bus_redeliveries_total", consumer=app.name) >= 2

        # Lag: stop consuming, publish, sample.
        for consumer in app._consumers:
            await consumer.stop()
        for i in range(3):
            await app.bus.publish_event(JobAttemptCompleted(job_key=f"late~{i}", attempt_id=0, exit_code=0))
        await app.outbox.collection.insert_one(
            {"_id": "x", "order": 0, "subject": "s", "headers": {}, "data": b""}
        )
        await sample_once(app.bus, app.outbox, app._consumers)
        assert value("pai_bus_consumer_pending_messages", consumer=app.name) == 3
        assert value("pai_outbox_backlog_messages") == 1
        await app.outbox.collection.delete_many({})
        app._consumers.clear()
    finally:
        await app.stop()

    # Every process announces itself as a Prometheus file_sd target with its service and process names.
    target = json.loads((tmp_path / "run" / "targets" / f"{app.name}.json").read_text())
    port = json.loads((tmp_path / "run" / f"{app.name}.json").read_text())["health_port"]
    assert target == [
        {"targets": [f"127.0.0.1:{port}"], "labels": {"service": app.name, "process": app.name}}
    ]


@pytest.mark.parametrize(
    ("explicit", "environ", "chosen"),
    [
        (None, {}, "none"),
        ("console", {"OTEL_TRACES_EXPORTER": "otlp"}, "console"),
        (None, {"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
        (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
        (None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, "otlp"),
        (None, {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "none"),
        ("OTLP", {}, "otlp"),
    ],
)
def test_the_exporter_follows_the_settings_then_the_otel_environment(
    explicit: str | None, environ: dict[str, Any], chosen: str
) -> None:
    assert choose_exporter(explicit, environ) == chosen


def test_an_unknown_exporter_is_refused() -> None:
    with pytest.raises(TracingConfigError, match="unknown trace exporter 'zipkin'"):
        choose_exporter(None, {"OTEL_TRACES_EXPORTER": "zipkin"})
