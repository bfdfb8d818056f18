"""The node agent: registers its node, launches and stops tasks on command, reports their exits."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from pai_common.consumer import HandlerContext
from pai_common.contract.base import COMMAND_SUBJECT_PREFIX, heartbeat_subject
from pai_common.contract.commands import KillTask, LaunchTask
from pai_common.contract.events import NodeRegistered, TaskExited, TaskRunning
from pai_common.contract.rpc import TaskLogReply, TaskLogRequest
from pai_common.envelope import Envelope
from pai_common.errors import NoTaskLogError
from pai_common.service import ServiceApp
from pai_runtime import local_process
from pai_runtime.devices import detect
from pai_runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

RUNS = "runs"
LOG_TAIL_BYTES = 4096


def now_ms() -> int:
    return int(time.time() * 1000)


def run_id(job_key: str, attempt_id: int, role: str, index: int) -> str:
    return f"{job_key}/{attempt_id}/{role}/{index}"


class Agent:
    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.node = settings.node_name
        # Each node keeps its own collection: agents on one machine share the service's database.
        self.runs_collection = f"{RUNS}_{self.node}"
        self.app = ServiceApp("runtime", settings)
        self.root = Path(settings.data_dir).resolve() / "runtime" / self.node
        self._watchers: set[asyncio.Task[None]] = set()
        self.app.on_commands(
            f"runtime-{self.node}", f"{COMMAND_SUBJECT_PREFIX}.runtime.{self.node}.>", self.handle_command
        )
        self.app.rpc({TaskLogRequest: self.task_log}, target=self.node)
        self.app.on_startup(self._register)
        self.app.on_startup(self._resume)
        self.app.background(self._heartbeat)

    def workdir(self, job_key: str, attempt_id: int, role: str, index: int) -> Path:
        # "~" is legal in a path, but keep the layout readable and free of the separator users type.
        return self.root / "runs" / job_key.replace("~", "__") / str(attempt_id) / f"{role}-{index}"

    # ---- start-up ------------------------------------------------------------------------------------

    async def _register(self, app: ServiceApp) -> None:
        inventory = detect(self.node, self.settings.simulated_gpus, self.settings.force_simulated)
        registration = NodeRegistered(
            node=self.node,
            host_ip=self.settings.host_ip,
            cpu=os.cpu_count() or 1,
            memory_mb=_memory_mb(),
            gpus=inventory.gpus,
            simulated=inventory.simulated,
        )

        async def register(tx: HandlerContext) -> None:
            tx.out.event(registration)

        await app.transact(register)
        log.info(
            "node registered",
            extra={"node": self.node, "gpus": len(inventory.gpus), "simulated": inventory.simulated},
        )

    async def _heartbeat(self) -> None:
        """Tell the scheduler this node is alive; silence for long enough makes the node bad."""
        subject = heartbeat_subject(self.node)
        while True:
            try:
                await self.app.bus.nc.publish(
                    subject, json.dumps({"node": self.node, "at": now_ms()}).encode()
                )
            except Exception as exc:  # the connection reconnects by itself; keep beating
                log.warning("heartbeat not sent", extra={"error": repr(exc)})
            await asyncio.sleep(self.settings.heartbeat_s)

    async def _resume(self, app: ServiceApp) -> None:
        """Tasks that ran while the agent was down: adopt the live ones, report the finished ones."""
        async for run in app.db[self.runs_collection].find({"status": "running"}):
            self._watch(run["_id"], int(run["pid"]), Path(run["workdir"]), run["event"])

    # ---- commands ------------------------------------------------------------------------------------

    async def handle_command(self, ctx: HandlerContext, env: Envelope) -> None:
        if isinstance(env.body, LaunchTask):
            await self.launch(ctx, env.body)
        elif isinstance(env.body, KillTask):
            await self.kill(ctx, env.body)
        else:
            raise TypeError(f"runtime cannot handle {env.type}")

    async def launch(self, ctx: HandlerContext, cmd: LaunchTask) -> None:
        rid = run_id(cmd.job_key, cmd.attempt_id, cmd.task_role, cmd.index)
        runs = ctx.db[self.runs_collection]
        if await runs.find_one({"_id": rid}, {"_id": 1}, session=ctx.session):
            return  # launched already: a command is done once
        workdir = self.workdir(cmd.job_key, cmd.attempt_id, cmd.task_role, cmd.index)
        pid_file = workdir / "pid"
        if pid_file.exists():
            # Started by a previous delivery whose commit did not happen: adopt it, never start twice.
            pid = int(pid_file.read_text())
        else:
            local_process.prepare(workdir, cmd.entrypoint)
            devices = ",".join(str(g) for g in cmd.gpus)
            extra = {**cmd.env, "CUDA_VISIBLE_DEVICES": devices, "NVIDIA_VISIBLE_DEVICES": devices or "void"}
            extra.update(gpu_share_env(cmd.gpus, cmd.gpu_milli, cmd.gpu_memory_mb))
            extra["PAI_CONTAINER_HOST_IP"] = self.settings.host_ip
            extra["PAI_CURRENT_CONTAINER_IP"] = self.settings.host_ip
            pid = await local_process.start(workdir, local_process.task_env(dict(os.environ), extra, workdir))
        started = now_ms()
        exited_template = {
            "job_key": cmd.job_key,
            "attempt_id": cmd.attempt_id,
            "task_role": cmd.task_role,
            "index": cmd.index,
            "node": self.node,
        }
        await runs.insert_one(
            {
                "_id": rid,
                "status": "running",
                "pid": pid,
                "workdir": str(workdir),
                "started_at": started,
                "event": exited_template,
                # The job records that it ran on the host, not in its Docker image.
                "backend": "local-process",
            },
            session=ctx.session,
        )
        ctx.out.event(
            TaskRunning(
                **exited_template,
                host_ip=self.settings.host_ip,
                pid=pid,
                started_at=started,
            ),
            msg_id=f"running:{rid}",
        )
        self._watch(rid, pid, workdir, exited_template)
        log.info("task launched", extra={"run": rid, "pid": pid})

    async def kill(self, ctx: HandlerContext, cmd: KillTask) -> None:
        rid = run_id(cmd.job_key, cmd.attempt_id, cmd.task_role, cmd.index)
        run = await ctx.db[self.runs_collection].find_one({"_id": rid}, session=ctx.session)
        if run is None or run["status"] != "running":
            return
        await ctx.db[self.runs_collection].update_one(
            {"_id": rid}, {"$set": {"stop_reason": cmd.reason}}, session=ctx.session
        )
        # The stop runs beside the consumer; the watcher reports the exit as for any other end.
        task = asyncio.create_task(local_process.stop(int(run["pid"]), cmd.grace_period_s))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    # ---- exits ---------------------------------------------------------------------------------------

    def _watch(self, rid: str, pid: int, workdir: Path, template: dict[str, Any]) -> None:
        task = asyncio.create_task(self._report_exit(rid, pid, workdir, template), name=f"watch:{rid}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _report_exit(self, rid: str, pid: int, workdir: Path, template: dict[str, Any]) -> None:
        result = await local_process.wait(pid, workdir)
        stdout, _, _ = local_process.tail(workdir / "stdout.log", LOG_TAIL_BYTES)
        stderr, _, _ = local_process.tail(workdir / "stderr.log", LOG_TAIL_BYTES)
        finished = now_ms()
        for _ in range(300):
            try:
                async with self.app.transaction() as tx:
                    updated = await tx.db[self.runs_collection].update_one(
                        {"_id": rid, "status": "running"},
                        {
                            "$set": {
                                "status": "exited",
                                "exit_code": result.exit_code,
                                "finished_at": finished,
                            }
                        },
                        session=tx.session,
                    )
                    if updated.matched_count == 1:
                        tx.out.event(
                            TaskExited(
                                **template,
                                exit_code=result.exit_code,
                                signal=result.signal,
                                log_tail=(stdout + stderr)[-LOG_TAIL_BYTES:],
                                finished_at=finished,
                            ),
                            msg_id=f"exited:{rid}",
                        )
                        log.info("task exited", extra={"run": rid, "exit_code": result.exit_code})
                        return
                    exists = await tx.db[self.runs_collection].find_one({"_id": rid}, session=tx.session)
                if exists is not None:
                    return  # reported already
            except Exception as exc:
                log.warning("could not record a task exit; retrying", extra={"run": rid, "error": repr(exc)})
            # The launch that started it has not committed yet.
            await asyncio.sleep(0.2)
        log.error("task exit could not be recorded", extra={"run": rid})

    # ---- logs ----------------------------------------------------------------------------------------

    async def task_log(self, req: TaskLogRequest) -> TaskLogReply:
        workdir = self.workdir(req.job_key, req.attempt_id, req.task_role, req.index)
        path = workdir / f"{req.stream}.log"
        if not path.exists():
            raise NoTaskLogError(
                f"no {req.stream} log for {req.job_key} {req.task_role}[{req.index}] on {self.node}"
            )
        content, size, truncated = local_process.tail(path, req.tail_bytes)
        return TaskLogReply(content=content, size=size, truncated=truncated)


def gpu_share_env(gpus: list[int], milli: int, memory_mb: int) -> dict[str, str]:
    """A GPU share's limits as CUDA MPS reads them (they bind only where an MPS daemon runs), and as
    plain PAI_* values for the task itself."""
    if not gpus or not (milli or memory_mb):
        return {}
    env = {"PAI_GPU_SHARE_MILLI": str(milli), "PAI_GPU_SHARE_MEMORY_MB": str(memory_mb)}
    if milli:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(max(1, milli // 10))
    if memory_mb:
        # The task sees its one GPU as device 0.
        env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"0={memory_mb}M"
    return env


def _memory_mb() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total // (1024 * 1024))
    except ImportError:
        return 0


def main() -> None:
    Agent(RuntimeSettings()).app.run()
