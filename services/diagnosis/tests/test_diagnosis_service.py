"""The diagnosis service against a real NATS server (JetStream) and a real MongoDB-wire server: task exits
in, diagnoses stored and published; the exit spec read, uploaded (validated first), kept across a restart.
The gateway's admin routes in front of it are tested in tests/test_diagnosis_gateway_routes.py."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from pai_common.bus import Bus
from pai_common.contract.events import TaskDiagnosed, TaskExited
from pai_common.contract.rpc import ExitSpecReply, GetExitSpecRequest, PutExitSpecRequest
from pai_common.embedded import ServerProcess
from pai_common.errors import ForbiddenUserError, InvalidParametersError
from pai_common.service import ServiceApp
from pai_common.settings import Settings
from pai_common.testing import EventRecorder
from pai_diagnosis.shell import DIAGNOSES, Diagnoser
from pai_diagnosis.spec import builtin_spec

LICENSE_SPEC = """version: 1
spec:
- code: 450
  phrase: LicenseServerDown
  type: PLATFORM_FAILURE
  behavior: TRANSIENT
  reaction: ALWAYS_RETRY
  reason: "The license server did not answer."
  solution: ["Wait for the license server"]
  pattern:
    runtimeContainerPatterns:
    - userLogRegex: '(?i)license server unreachable'
"""


def diagnosis_app(nats: ServerProcess, mongo: ServerProcess, db: str, data: Path) -> ServiceApp:
    settings = Settings(nats_url=nats.url, mongo_url=mongo.url, data_dir=data, nak_base_delay_s=0.05)
    app = ServiceApp("diagnosis", settings)
    Diagnoser(app)
    app.name = db  # a database of this test's own; the bus subjects stay the service's
    return app


def exited(job: str, exit_code: int, log: str = "", **extra: Any) -> TaskExited:
    return TaskExited(
        job_key=job,
        attempt_id=0,
        task_role="worker",
        index=0,
        node="n0",
        exit_code=exit_code,
        log_tail=log,
        finished_at=1_700_000_000_000,
        **extra,
    )


async def test_exits_are_diagnosed_stored_and_published(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    db = f"diag{uuid.uuid4().hex[:8]}"
    seen = EventRecorder(fresh_bus, "pai.evt.task.diagnosed")
    await seen.start()
    app = diagnosis_app(fresh_nats, mongo_server, db, tmp_path)
    await app.start()
    try:
        log = "step 10\ntorch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
        await fresh_bus.publish_event(exited("u~oom", 1, log, task_attempt_id=2))
        d = await seen.wait_for(TaskDiagnosed, "u~oom")
        assert (d.exit_code, d.spec_code, d.spec_phrase) == (1, 300, "ContainerTorchCudaOutOfMemory")
        assert (d.failure_type, d.reaction, d.task_attempt_id) == ("Permanent", "NEVER_RETRY", 2)
        assert d.exit_spec is not None and d.exit_spec["code"] == 300 and "pattern" not in d.exit_spec
        assert d.matched is not None and "Tried to allocate 2.00 GiB" in d.matched and "step 10" in d.matched
        assert d.explanation and d.suggestion and d.message == d.explanation

        await fresh_bus.publish_event(exited("u~sig", -9, signal=9))
        sig = await seen.wait_for(TaskDiagnosed, "u~sig")
        assert (sig.exit_code, sig.spec_code, sig.failure_type, sig.matched) == (137, 137, "Transient", None)

        await fresh_bus.publish_event(exited("u~evict", 137, pod_reason="Evicted"))
        assert (await seen.wait_for(TaskDiagnosed, "u~evict")).spec_code == -1000
        await fresh_bus.publish_event(
            exited("u~xid", 1, gpu_health={"0": {"xid": [79], "ecc_double": 0}}, container_reason="Error")
        )
        assert (await seen.wait_for(TaskDiagnosed, "u~xid")).spec_code == 320
        await fresh_bus.publish_event(exited("u~ok", 0))
        assert (await seen.wait_for(TaskDiagnosed, "u~ok")).failure_type == "Succeeded"

        stored = await app.db[DIAGNOSES].find_one({"_id": "u~oom/0/worker/0/2"})
        assert stored is not None
        assert (stored["spec_code"], stored["reaction"], stored["matched_by"]) == (
            300,
            "NEVER_RETRY",
            "runtime",
        )
    finally:
        await app.stop()


async def test_the_spec_is_validated_stored_and_kept_across_restarts(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    db = f"diag{uuid.uuid4().hex[:8]}"
    seen = EventRecorder(fresh_bus, "pai.evt.task.diagnosed")
    await seen.start()
    app = diagnosis_app(fresh_nats, mongo_server, db, tmp_path)
    await app.start()
    try:
        got = await fresh_bus.request(GetExitSpecRequest(username="root", admin=True), ExitSpecReply)
        assert (got.source, got.revision) == ("builtin", 0)
        assert got.spec == builtin_spec().document
        with pytest.raises(ForbiddenUserError):
            await fresh_bus.request(GetExitSpecRequest(username="bob"), ExitSpecReply)
        with pytest.raises(ForbiddenUserError):
            await fresh_bus.request(PutExitSpecRequest(text=LICENSE_SPEC, username="bob"), ExitSpecReply)
        # A full replacement without the fallback codes, and a regex RE2 cannot run linearly: refused, and
        # nothing changes.
        with pytest.raises(InvalidParametersError, match="code 255 is required"):
            await fresh_bus.request(
                PutExitSpecRequest(text=LICENSE_SPEC, username="root", admin=True), ExitSpecReply
            )
        evil = LICENSE_SPEC.replace("(?i)license server unreachable", "(a+)\\1")
        with pytest.raises(InvalidParametersError, match="RE2"):
            await fresh_bus.request(
                PutExitSpecRequest(text=evil, mode="overlay", username="root", admin=True), ExitSpecReply
            )
        with pytest.raises(InvalidParametersError, match="empty"):
            await fresh_bus.request(PutExitSpecRequest(text=" ", username="root", admin=True), ExitSpecReply)

        put = await fresh_bus.request(
            PutExitSpecRequest(text=LICENSE_SPEC, mode="overlay", username="root", admin=True), ExitSpecReply
        )
        assert (put.source, put.revision, put.updated_by) == ("uploaded", 1, "root")
        assert put.spec["spec"][-1]["code"] == 450
        await fresh_bus.publish_event(exited("u~lic", 1, "FATAL: license server unreachable at 10.0.0.9\n"))
        lic = await seen.wait_for(TaskDiagnosed, "u~lic")
        assert (lic.spec_code, lic.failure_type, lic.reaction) == (450, "Transient", "ALWAYS_RETRY")
    finally:
        await app.stop()

    # A new process finds the uploaded spec in its database.
    app = diagnosis_app(fresh_nats, mongo_server, db, tmp_path)
    await app.start()
    try:
        got = await fresh_bus.request(GetExitSpecRequest(username="root", admin=True), ExitSpecReply)
        assert (got.source, got.revision, got.spec["spec"][-1]["code"]) == ("uploaded", 1, 450)
        await fresh_bus.publish_event(exited("u~lic2", 1, "license server unreachable\n"))
        assert (await seen.wait_for(TaskDiagnosed, "u~lic2")).spec_code == 450
        reset = await fresh_bus.request(
            PutExitSpecRequest(mode="reset", username="root", admin=True), ExitSpecReply
        )
        assert reset.revision == 2 and reset.spec == builtin_spec().document
        # The shipped spec again, and said so (who reset it, and when, are kept).
        assert (reset.source, reset.updated_by) == ("builtin", "root")
        await fresh_bus.publish_event(exited("u~lic3", 1, "license server unreachable\n"))
        assert (await seen.wait_for(TaskDiagnosed, "u~lic3")).spec_code == 255
    finally:
        await app.stop()

    # A new process reads the reset from its database as the shipped spec too.
    app = diagnosis_app(fresh_nats, mongo_server, db, tmp_path)
    await app.start()
    try:
        got = await fresh_bus.request(GetExitSpecRequest(username="root", admin=True), ExitSpecReply)
        assert (got.source, got.revision, got.updated_by) == ("builtin", 2, "root")
        assert got.spec == builtin_spec().document
    finally:
        await app.stop()
