"""The diagnosis shell: classify each task exit, store the diagnosis, publish it."""

from __future__ import annotations

from pai_common.consumer import HandlerContext
from pai_common.contract.events import TaskDiagnosed, TaskExited
from pai_common.envelope import Envelope
from pai_common.service import ServiceApp
from pai_diagnosis.core import classify

DIAGNOSES = "diagnoses"


async def handle(ctx: HandlerContext, env: Envelope) -> None:
    exited = env.body
    assert isinstance(exited, TaskExited)
    diagnosis = classify(exited.exit_code, exited.signal)
    key = f"{exited.job_key}/{exited.attempt_id}/{exited.task_role}/{exited.index}"
    await ctx.db[DIAGNOSES].replace_one(
        {"_id": key},
        {
            "_id": key,
            "job_key": exited.job_key,
            "exit_code": exited.exit_code,
            "signal": exited.signal,
            "spec_code": diagnosis.spec_code,
            "phrase": diagnosis.phrase,
            "failure_type": diagnosis.failure_type,
            "message": diagnosis.message,
        },
        upsert=True,
        session=ctx.session,
    )
    ctx.out.event(
        TaskDiagnosed(
            job_key=exited.job_key,
            attempt_id=exited.attempt_id,
            task_role=exited.task_role,
            index=exited.index,
            exit_code=exited.exit_code if exited.signal is None else diagnosis.spec_code,
            spec_code=diagnosis.spec_code,
            spec_phrase=diagnosis.phrase,
            failure_type=diagnosis.failure_type,
            message=diagnosis.message,
            finished_at=exited.finished_at,
        ),
        msg_id=f"diagnosed:{env.id}",
    )


def build_app() -> ServiceApp:
    app = ServiceApp("diagnosis")
    app.on_event(TaskExited)(handle)
    return app


def main() -> None:
    build_app().run()
