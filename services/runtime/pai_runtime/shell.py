"""The node agent: registers its node, launches and stops tasks on command, reports their exits."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pai_common.consumer import HandlerContext
from pai_common.contract.base import COMMAND_SUBJECT_PREFIX, heartbeat_subject, subject_token
from pai_common.contract.commands import KillTask, LaunchTask, UpdateMembership
from pai_common.contract.events import NodeRegistered, TaskExited, TaskRunning
from pai_common.contract.rpc import (
    JobSecretsReply,
    JobSecretsRequest,
    StorageCredentialsReply,
    StorageCredentialsRequest,
    TaskLogReply,
    TaskLogRequest,
)
from pai_common.contract.types import DeviceInfo, GpuInfo, GpuShareStatus
from pai_common.envelope import Envelope
from pai_common.errors import NoTaskLogError, PaiError, ServiceUnavailableError
from pai_common.service import ServiceApp
from pai_runtime import jobssh, membership, metrics, mps, node_metrics, notice, plugins
from pai_runtime import secrets as job_secrets
from pai_runtime.backend import (
    PORT_CONFLICT_EXIT,
    SETUP_FAILED_EXIT,
    STOPPED_BEFORE_LAUNCH_EXIT,
    STORAGE_MOUNT_EXIT,
    Ended,
    SetupError,
    TaskBackend,
    TaskExit,
    TaskFiles,
    failure_script,
)
from pai_runtime.devices import Inventory, detect, load_inventory, nvml_gpu_report, nvml_health
from pai_runtime.exit_batch import Exit, ExitWriter
from pai_runtime.launch_batch import LaunchBatch, run_id
from pai_runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

RUNS = "runs"
LOG_TAIL_BYTES = 4096
SECRETS_FILE = ".secrets.json"
__all__ = ["PORT_CONFLICT_EXIT", "SETUP_FAILED_EXIT", "Agent", "main"]


def now_ms() -> int:
    return int(time.time() * 1000)


# How long a task's exit waits for its launch to be committed before _record_exit looks for the run itself.
LAUNCH_COMMIT_WAIT_S = 60.0


@dataclass
class Running:
    """A local task whose processes the agent samples for metrics."""

    pid: int
    gpus: list[int]
    labels: dict[str, str]


def make_backend(settings: RuntimeSettings) -> TaskBackend:
    if settings.backend == "kubernetes":
        from pai_runtime.kubernetes import KubernetesBackend, PodOptions

        options = PodOptions(
            namespace=settings.k8s_namespace,
            grace_period_s=int(settings.kill_grace_s),
            notice_host_dir=str(settings.k8s_notice_dir) if settings.k8s_notice_dir else None,
        )
        return KubernetesBackend(
            options, in_cluster=settings.k8s_in_cluster, kubeconfig=settings.k8s_kubeconfig
        )
    from pai_runtime.local_backend import LocalBackend

    root = Path(settings.data_dir).resolve() / "runtime" / settings.node_name
    return LocalBackend(settings, settings.node_name, root)


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


def device_env(cmd: LaunchTask) -> dict[str, str]:
    devices = ",".join(str(g) for g in cmd.gpus)
    # OpenPAI gives a CPU-only task NVIDIA_VISIBLE_DEVICES=none: no GPU reaches it, even in a container.
    env = {"CUDA_VISIBLE_DEVICES": devices, "NVIDIA_VISIBLE_DEVICES": devices or "none"}
    env.update(gpu_share_env(cmd.gpus, cmd.gpu_milli, cmd.gpu_memory_mb))
    return env


class Agent:
    def __init__(self, settings: RuntimeSettings, backend: TaskBackend | None = None) -> None:
        self.settings = settings
        self.node = settings.node_name
        # Each node keeps its own collection: agents on one machine share the service's database.
        token = subject_token(self.node)  # the name without dots, for subjects and names
        self.runs_collection = f"{RUNS}_{token}"
        self.app = ServiceApp("runtime", settings)
        self.root = Path(settings.data_dir).resolve() / "runtime" / self.node
        # Where tasks run: local processes or Kubernetes pods (settings.backend), unless one is given.
        self.backend: TaskBackend = backend or make_backend(settings)
        self._watchers: set[asyncio.Task[None]] = set()
        self._running: dict[str, Running] = {}
        # Set once the transaction that launched a run committed (a run adopted at start-up has none).
        self._launch_committed: dict[str, asyncio.Event] = {}
        self._sampler = metrics.TaskSampler()
        self._exits = ExitWriter(self.app, self.runs_collection)
        self._inventory: Inventory | None = None
        # GPU shares held by CUDA MPS where the node can (decided with the inventory at registration).
        self._mps = mps.MpsDaemons(self.root / "mps", mps.support("simulated", settings.backend))
        self.app.on_commands(
            f"runtime-{token}", f"{COMMAND_SUBJECT_PREFIX}.runtime.{token}.>", self.handle_command
        )
        self.app.rpc({TaskLogRequest: self.task_log}, target=self.node)
        self.app.on_startup(self._start_backend)
        self.app.on_startup(self._register)
        self.app.on_startup(self._resume)
        self.app.on_shutdown(self._stop_watching)
        self.app.background(self._heartbeat)
        self.app.background(self._watch_health)
        self.app.background(self._sample_tasks)
        self.app.background(self._sample_node)
        self.app.background(self._expire_logs)

    def workdir(self, job_key: str, attempt_id: int, role: str, index: int, task_attempt_id: int = 0) -> Path:
        # "~" is legal in a path, but keep the layout readable and free of the separator users type.
        return (
            self.root
            / "runs"
            / job_key.replace("~", "__")
            / str(attempt_id)
            / f"{role}-{index}"
            / str(task_attempt_id)
        )

    # ---- start-up ------------------------------------------------------------------------------------

    def _registration(self, inventory: Inventory) -> NodeRegistered:
        self._mps.sharing = mps.support(inventory.source, self.settings.backend)
        return NodeRegistered(
            node=self.node,
            host_ip=self.settings.host_ip,
            cpu=os.cpu_count() or 1,
            memory_mb=_memory_mb(),
            gpus=inventory.gpus,
            simulated=inventory.simulated,
            fpgas=inventory.fpgas,
            infiniband=inventory.infiniband,
            inventory_source=inventory.source,
            gpu_sharing=self._mps.sharing,
        )

    async def _register(self, app: ServiceApp) -> None:
        inventory = detect(
            self.node,
            self.settings.simulated_gpus,
            self.settings.force_simulated,
            self.settings.inventory_file,
        )
        await self._publish_registration(inventory)
        log.info(
            "node registered",
            extra={
                "node": self.node,
                "gpus": len(inventory.gpus),
                "simulated": inventory.simulated,
                "inventory": inventory.source,
                "fpgas": len(inventory.fpgas),
                "infiniband": len(inventory.infiniband),
            },
        )

    async def _publish_registration(self, inventory: Inventory) -> None:
        registration = self._registration(inventory)

        async def register(tx: HandlerContext) -> None:
            tx.out.event(registration)

        await self.app.transact(register)
        self._inventory = inventory

    def _unhealthy_gpus(self) -> list[int]:
        return [g.index for g in self._inventory.gpus if not g.healthy] if self._inventory else []

    async def _heartbeat(self) -> None:
        """Tell the scheduler this node is alive; silence for long enough makes the node bad."""
        subject = heartbeat_subject(self.node)
        while True:
            try:
                beat = {"node": self.node, "at": now_ms(), "unhealthy_gpus": self._unhealthy_gpus()}
                await self.app.bus.nc.publish(subject, json.dumps(beat).encode())
            except Exception as exc:  # the connection reconnects by itself; keep beating
                log.warning("heartbeat not sent", extra={"error": repr(exc)})
            await asyncio.sleep(self.settings.heartbeat_s)

    async def _watch_health(self) -> None:
        """A device that goes bad is reported by registering the node again with the device marked
        unhealthy (and in every heartbeat): NVML's view for real GPUs, the file for a declared inventory
        (an operator marks a device bad by editing it)."""
        while True:
            await asyncio.sleep(self.settings.health_check_s)
            try:
                await self.check_health_once()
            except Exception as exc:
                log.warning("device health check failed", extra={"error": repr(exc)})

    async def check_health_once(self) -> bool:
        inventory = self._inventory
        if inventory is None:
            return False
        if inventory.source == "nvml":
            health = await asyncio.to_thread(nvml_health) or {}
            gpus = [g.model_copy(update={"healthy": health.get(g.index, False)}) for g in inventory.gpus]
            updated = Inventory(gpus, False, inventory.fpgas, inventory.infiniband, "nvml")
        elif inventory.source == "declared" and self.settings.inventory_file is not None:
            updated = await asyncio.to_thread(load_inventory, self.node, self.settings.inventory_file)
        else:
            return False
        if updated == inventory:
            return False
        await self._publish_registration(updated)
        log.warning(
            "device health changed",
            extra={
                "unhealthy_gpus": self._unhealthy_gpus(),
                "unhealthy_devices": [d.id for d in updated.fpgas + updated.infiniband if not d.healthy],
            },
        )
        return True

    async def _resume(self, app: ServiceApp) -> None:
        """Tasks that ran while the agent was down: adopt the live ones, report the finished ones."""
        async for run in app.db[self.runs_collection].find({"status": "running"}):
            gpu = self._gpu(run.get("mps_gpu"))
            if gpu is not None:
                await self._mps.adopt(gpu, str(run["_id"]))
            self._watch(run)

    async def _start_backend(self, app: ServiceApp) -> None:
        await self.backend.start()

    async def _stop_watching(self, app: ServiceApp) -> None:
        """The tasks keep running without the agent; the next agent adopts them (``_resume``)."""
        for task in list(self._watchers):
            task.cancel()
        self._exits.close()
        for running in self._running.values():
            metrics.remove(running.labels)
        self._running.clear()
        await self.backend.close()

    # ---- commands ------------------------------------------------------------------------------------

    async def handle_command(self, ctx: HandlerContext, env: Envelope) -> None:
        if isinstance(env.body, LaunchTask):
            await self.launch(ctx, env.body)
        elif isinstance(env.body, KillTask):
            await self.kill(ctx, env.body)
        elif isinstance(env.body, UpdateMembership):
            await self.update_membership(ctx, env.body)
        else:
            raise TypeError(f"runtime cannot handle {env.type}")

    async def _job_secrets(self, cmd: LaunchTask) -> dict[str, Any]:
        if not cmd.has_secrets:
            return {}
        ask = JobSecretsRequest(
            job_key=cmd.job_key,
            node=self.node,
            attempt_id=cmd.attempt_id,
            task_role=cmd.task_role,
            index=cmd.index,
            task_attempt_id=cmd.task_attempt_id,
        )
        try:
            reply = await self.app.bus.request(ask, JobSecretsReply, timeout=self.settings.secrets_timeout_s)
        except ServiceUnavailableError:
            # The jobs service (or the orchestrator it asks) is restarting: a lag that resolves itself, so
            # the command is delivered again for as long as it lasts (the consumer counts it as transient).
            raise
        except PaiError as exc:
            raise SetupError(SETUP_FAILED_EXIT, f"the job's secrets are not available: {exc}") from exc
        return dict(reply.secrets)

    async def _storage_credentials(self, cmd: LaunchTask) -> dict[str, dict[str, str]]:
        """The credentials of the task's storages that the storage service keeps (never logged)."""
        found: dict[str, dict[str, str]] = {}
        for m in cmd.mounts:
            if not m.has_credentials:
                continue
            try:
                reply = await self.app.bus.request(
                    StorageCredentialsRequest(storage=m.name, node=self.node),
                    StorageCredentialsReply,
                    timeout=self.settings.secrets_timeout_s,
                )
            except ServiceUnavailableError:
                raise  # transient: the command is delivered again
            except PaiError as exc:
                raise SetupError(STORAGE_MOUNT_EXIT, f"storage {m.name} not mounted: {exc}") from exc
            found[m.name] = dict(reply.values)
        return found

    def _ssh_secret(self) -> bytes:
        return jobssh.shared_secret(self.settings)

    async def _build(self, cmd: LaunchTask, workdir: Path) -> TaskFiles:
        """The task as the backend starts it: the job's secrets, the rendered user commands, the plugins'
        commands and files, the environment. SetupError for a task that cannot run as asked."""
        env = self.task_env(cmd)
        paths = self.backend.paths(workdir)
        if paths.notice is not None:
            env[notice.ENV] = paths.notice
        members: dict[str, tuple[str, int]] = {}
        if membership.is_elastic(cmd.env):
            env[membership.ENV] = paths.membership or str(Path(paths.home) / membership.FILE_NAME)
            text = membership.render(env, int(cmd.env[membership.VERSION]))
            members[membership.FILE_NAME] = (text, 0o644)
        fpgas = self._fpgas(cmd)
        env.update(fpga_env(fpgas))
        secrets = await self._job_secrets(cmd)
        if secrets:
            fd = os.open(workdir / SECRETS_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(job_secrets.values(secrets), f)
        try:
            entrypoint = job_secrets.render(cmd.entrypoint, secrets)
            built = plugins.build(
                cmd.plugins,
                plugins.PluginContext(
                    job_key=cmd.job_key,
                    task_role=cmd.task_role,
                    index=cmd.index,
                    env=env,
                    home=paths.home,
                    python=paths.python,
                    barrier_script=paths.barrier_script,
                    sshd=paths.sshd,
                    job_ssh_secret=self._ssh_secret() if _uses_ssh(cmd.plugins) else b"",
                    job_secrets=secrets,
                ),
            )
        except (plugins.PluginError, job_secrets.SecretNotFoundError) as exc:
            raise SetupError(SETUP_FAILED_EXIT, str(exc)) from exc
        return TaskFiles(
            entrypoint=entrypoint,
            pre=built.pre_script,
            post=built.post_script,
            files={**built.files, **members},
            env={**env, **built.env},
            secrets=secrets,
            fpgas=fpgas,
        )

    def _fpgas(self, cmd: LaunchTask) -> list[DeviceInfo]:
        """The inventory entries of the FPGAs the task got; SetupError for one this node does not have."""
        if not cmd.fpgas:
            return []
        known = {d.index: d for d in (self._inventory.fpgas if self._inventory else [])}
        missing = [i for i in cmd.fpgas if i not in known]
        if missing:
            raise SetupError(
                SETUP_FAILED_EXIT, f"FPGA(s) {missing} are not in the inventory of node {self.node}"
            )
        return [known[i] for i in cmd.fpgas]

    def _gpu(self, index: object) -> GpuInfo | None:
        if not isinstance(index, int) or self._inventory is None:
            return None
        return next((g for g in self._inventory.gpus if g.index == index), None)

    async def _release_share(self, gpus: list[int], rid: str, share: GpuShareStatus | None) -> None:
        gpu = self._gpu(gpus[0]) if share is not None and share.enforced and gpus else None
        if gpu is not None:
            await self._mps.release(gpu, rid)

    async def _gpu_share(self, cmd: LaunchTask, rid: str) -> tuple[dict[str, str], GpuShareStatus | None]:
        """A share task becomes a client of its GPU's MPS daemon where the node has one (the environment
        that makes it one), and says how its share is held."""
        if not cmd.gpus or not (cmd.gpu_milli or cmd.gpu_memory_mb):
            return {}, None
        gpu = self._gpu(cmd.gpus[0])
        if gpu is None:
            note = f"GPU {cmd.gpus[0]} is not in the inventory of node {self.node}: the share is not enforced"
            return {}, GpuShareStatus(
                milli=cmd.gpu_milli, memory_mb=cmd.gpu_memory_mb, enforced=False, note=note
            )
        return await self._mps.acquire(gpu, rid, cmd.gpu_milli, cmd.gpu_memory_mb)

    async def launch(self, ctx: HandlerContext, cmd: LaunchTask) -> None:
        rid = run_id(cmd.job_key, cmd.attempt_id, cmd.task_role, cmd.index, cmd.task_attempt_id)
        batch = LaunchBatch.of(ctx, self.runs_collection)
        if await batch.launched(rid):
            return  # launched already: a command is done once
        workdir = self.workdir(cmd.job_key, cmd.attempt_id, cmd.task_role, cmd.index, cmd.task_attempt_id)
        workdir.mkdir(parents=True, exist_ok=True)
        share_env, share = await self._gpu_share(cmd, rid)
        own: dict[str, str] = {}
        try:
            task = await self._build(cmd, workdir)
            own = membership.own_variables(task.env, cmd.env)
            task.env.update(share_env)
            mounts = self.backend.mounts(cmd, await self._storage_credentials(cmd))
            started = await self.backend.launch(cmd, workdir, task, mounts)
        except SetupError as exc:
            # The task still runs, as a one-line script: its logs and exit tell the user what failed.
            log.warning("task set-up failed", extra={"run": rid, "exit_code": exc.code})
            failed = TaskFiles(failure_script(str(exc), exc.code), env=self.task_env(cmd), failed=True)
            started = await self.backend.launch(cmd, workdir, failed, None)
        except BaseException:
            await self._release_share(cmd.gpus, rid, share)
            raise
        begun = now_ms()
        template = _template(cmd, self.node)
        run = {
            "_id": rid,
            "status": "running",
            "pid": started.pid,
            **started.record,
            "workdir": str(workdir),
            "started_at": begun,
            "event": template,
            "gpus": cmd.gpus,
            # Whether the job ran on the host, in its image or in a pod.
            "backend": started.backend,
            # The GPU whose MPS daemon the task is a client of (released when it ends).
            "mps_gpu": cmd.gpus[0] if share is not None and share.enforced else None,
            # An elastic task: the PAI_* variables the agent added, which each new membership file keeps.
            **({"membership_env": own} if own else {}),
        }
        batch.add(run)  # inserted with the batch's other runs at the transaction's end
        ctx.out.event(
            TaskRunning(
                **template,
                host_ip=self.settings.host_ip,
                pid=started.pid,
                started_at=begun,
                backend=started.backend,
                gpu_share=share,
            ),
            msg_id=f"running:{rid}",
        )
        # Its exit is recorded once the run is committed: a task that ends at once (`true`) would otherwise
        # find no run to update and try again.
        committed = self._launch_committed.setdefault(rid, asyncio.Event())
        ctx.on_commit(committed.set)
        self._watch(run)
        log.info("task launched", extra={"run": rid, "pid": started.pid, "backend": started.backend})

    async def _run(self, ctx: HandlerContext, rid: str) -> dict[str, Any] | None:
        """The run as this transaction sees it: launched earlier in its batch, or stored."""
        launched_now = LaunchBatch.of(ctx, self.runs_collection).pending.get(rid)
        if launched_now is not None:
            return launched_now
        return await ctx.db[self.runs_collection].find_one({"_id": rid}, session=ctx.session)

    def task_env(self, cmd: LaunchTask) -> dict[str, str]:
        return {
            **cmd.env,
            **device_env(cmd),
            "PAI_CONTAINER_HOST_IP": self.settings.host_ip,
            "PAI_CURRENT_CONTAINER_IP": self.settings.host_ip,
            "FC_FRAMEWORK_ATTEMPT_ID": str(cmd.attempt_id),
            "FC_TASK_ATTEMPT_ID": str(cmd.task_attempt_id),
            "PAI_TASK_ATTEMPT_ID": str(cmd.task_attempt_id),
        }

    async def kill(self, ctx: HandlerContext, cmd: KillTask) -> None:
        rid = run_id(cmd.job_key, cmd.attempt_id, cmd.task_role, cmd.index, cmd.task_attempt_id)
        run = await self._run(ctx, rid)
        if run is None:
            self._stopped_before_launch(ctx, cmd, rid)
            return
        if run["status"] != "running":
            return
        launched_now = LaunchBatch.of(ctx, self.runs_collection).pending.get(rid)
        if launched_now is not None:
            launched_now["stop_reason"] = cmd.reason  # not inserted yet: it is, with its stop reason
        else:
            await ctx.db[self.runs_collection].update_one(
                {"_id": rid}, {"$set": {"stop_reason": cmd.reason}}, session=ctx.session
            )
        told = notice.content(cmd)
        if told is not None and not await self.backend.notify(run, told):
            log.warning(
                "preemption notice not delivered: the backend has no place for it", extra={"run": rid}
            )
        # The stop runs beside the consumer; the watcher reports the exit as for any other end.
        task = asyncio.create_task(self.backend.kill(run, cmd.grace_period_s))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _stopped_before_launch(self, ctx: HandlerContext, cmd: KillTask, rid: str) -> None:
        """The stop of a task this agent never launched: its launch went back to the stream (a transient
        failure, or this agent restarted while it held it) and the stop overtook it. The run is stored as
        ended, so that the launch, when it comes, starts nothing (its cells may be someone else's by then),
        and the exit is reported at once: the orchestrator, which waits for it, need not wait out its
        deadline."""
        template = _template(cmd, self.node)
        finished = now_ms()
        LaunchBatch.of(ctx, self.runs_collection).add(
            {
                "_id": rid,
                "status": "exited",
                "exit_code": STOPPED_BEFORE_LAUNCH_EXIT,
                "signal": int(signal.SIGTERM),
                "finished_at": finished,
                "stop_reason": cmd.reason,
                "never_launched": True,
                "event": template,
            }
        )
        why = f"stopped before it was launched on {self.node}: {cmd.reason}"
        ctx.out.event(
            TaskExited(
                **template,
                exit_code=STOPPED_BEFORE_LAUNCH_EXIT,
                signal=int(signal.SIGTERM),
                log_tail=why,
                finished_at=finished,
            ),
            msg_id=f"exited:{rid}",
        )
        log.warning("stop of a task not launched here; it will not start", extra={"run": rid})

    async def update_membership(self, ctx: HandlerContext, cmd: UpdateMembership) -> None:
        """An elastic job's gang changed: the task's membership file is rewritten and the task signalled."""
        rid = run_id(cmd.job_key, cmd.attempt_id, cmd.task_role, cmd.index, cmd.task_attempt_id)
        run = await self._run(ctx, rid)
        if run is None or run["status"] != "running":
            return  # not started here, or ended: its membership no longer matters
        text = membership.render({**cmd.env, **run.get("membership_env", {})}, cmd.version)
        if not await self.backend.membership(run, text):
            log.warning(
                "membership change not delivered: the backend cannot rewrite a running task's files",
                extra={"run": rid, "version": cmd.version},
            )

    # ---- exits ---------------------------------------------------------------------------------------

    def _watch(self, run: dict[str, Any]) -> None:
        rid = str(run["_id"])
        template: dict[str, Any] = run["event"]
        pid = int(run.get("pid") or 0)
        if pid:
            labels = metrics.task_labels(
                self.node,
                str(template["job_key"]),
                str(template["task_role"]),
                int(template["index"]),
                int(template.get("task_attempt_id", 0)),
            )
            self._running[rid] = Running(pid, list(run.get("gpus") or []), labels)
        task = asyncio.create_task(self._report_exit(run), name=f"watch:{rid}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _secret_values(self, workdir: Path) -> list[str]:
        try:
            loaded = json.loads((workdir / SECRETS_FILE).read_text())
        except (OSError, ValueError):
            return []
        return [str(v) for v in loaded] if isinstance(loaded, list) else []

    async def _report_exit(self, run: dict[str, Any]) -> None:
        rid = str(run["_id"])
        ended: Ended = await self.backend.wait(run)
        committed = self._launch_committed.get(rid)
        if committed is not None:
            try:
                await asyncio.wait_for(committed.wait(), LAUNCH_COMMIT_WAIT_S)
            except TimeoutError:
                pass  # its launch was not committed (retried, or lost): _record_exit finds out
            self._launch_committed.pop(rid, None)
        running = self._running.pop(rid, None)
        if running is not None:
            metrics.remove(running.labels)
        gpu = self._gpu(run.get("mps_gpu"))
        if gpu is not None:
            await self._mps.release(gpu, rid)
        gpus = list(run.get("gpus") or [])
        gpu_health = None
        if gpus and self._inventory and self._inventory.source == "nvml":
            gpu_health = await asyncio.to_thread(nvml_gpu_report, gpus)
        await self._record_exit(
            rid,
            run["event"],
            ended.result,
            job_secrets.mask(ended.tail, self._secret_values(Path(run["workdir"]))),
            pod_reason=ended.pod_reason,
            container_reason=ended.container_reason,
            gpu_health=gpu_health,
        )

    async def _record_exit(
        self,
        rid: str,
        template: dict[str, Any],
        result: TaskExit,
        tail: str,
        pod_reason: str | None = None,
        container_reason: str | None = None,
        gpu_health: dict[str, Any] | None = None,
    ) -> None:
        """The run marked exited and ``task.exited`` sent, once; in one transaction with the other exits
        of the moment (``exit_batch``)."""
        await self._exits.record(
            Exit(rid, template, result, tail, now_ms(), pod_reason, container_reason, gpu_health)
        )

    # ---- metrics and retention -----------------------------------------------------------------------

    async def _sample_tasks(self) -> None:
        while True:
            await asyncio.sleep(self.settings.metrics_s)
            for run in list(self._running.values()):
                try:
                    usage = await asyncio.to_thread(self._sampler.sample, run.pid, run.gpus)
                    if run in self._running.values():
                        metrics.publish(run.labels, usage)
                except Exception as exc:
                    log.warning("task metrics not sampled", extra={"error": repr(exc)})

    async def _sample_node(self) -> None:
        sampler = node_metrics.NodeSampler(self.node, Path(self.settings.data_dir))
        while True:
            try:
                gpus = self._inventory.gpus if self._inventory else []
                simulated = self._inventory.simulated if self._inventory else True
                await asyncio.to_thread(sampler.sample, gpus, simulated)
            except Exception as exc:
                log.warning("node metrics not sampled", extra={"error": repr(exc)})
            await asyncio.sleep(self.settings.metrics_s)

    async def _expire_logs(self) -> None:
        """Finished tasks keep their directory (logs included) for the retention time, then lose it."""
        period = max(1.0, min(self.settings.log_retention_s / 4, 300.0))
        while True:
            await asyncio.sleep(period)
            try:
                await self.expire_logs_once(now_ms())
            except Exception as exc:
                log.warning("log retention pass failed", extra={"error": repr(exc)})

    async def expire_logs_once(self, now: int) -> int:
        cutoff = now - int(self.settings.log_retention_s * 1000)
        runs = self.app.db[self.runs_collection]
        removed = 0
        async for run in runs.find(
            {"status": "exited", "finished_at": {"$lte": cutoff}, "logs_removed": None}
        ):
            await asyncio.to_thread(shutil.rmtree, run["workdir"], True)
            await runs.update_one({"_id": run["_id"]}, {"$set": {"logs_removed": now}})
            removed += 1
        return removed

    # ---- logs ----------------------------------------------------------------------------------------

    async def task_log(self, req: TaskLogRequest) -> TaskLogReply:
        rid = run_id(req.job_key, req.attempt_id, req.task_role, req.index, req.task_attempt_id)
        workdir = self.workdir(req.job_key, req.attempt_id, req.task_role, req.index, req.task_attempt_id)
        run = await self.app.db[self.runs_collection].find_one({"_id": rid})
        missing = NoTaskLogError(
            f"no {req.stream} log for {req.job_key} {req.task_role}[{req.index}]"
            f" (task attempt {req.task_attempt_id}) on {self.node}"
        )
        if run is None:
            raise missing
        try:
            text = await self.backend.logs(run, req.stream, req.tail_bytes)
        except FileNotFoundError:
            raise missing from None
        return TaskLogReply(
            content=job_secrets.mask(text.content, self._secret_values(workdir)),
            size=text.size,
            truncated=text.truncated,
        )


def fpga_env(fpgas: list[DeviceInfo]) -> dict[str, str]:
    """The FPGAs a task got, for the task itself: indices in the node's inventory, their ids (PCIe
    addresses), models and device files."""
    if not fpgas:
        return {}
    return {
        "PAI_FPGA_DEVICES": ",".join(str(f.index) for f in fpgas),
        "PAI_FPGA_IDS": ",".join(f.id for f in fpgas),
        "PAI_FPGA_MODELS": ",".join(f.model for f in fpgas),
        "PAI_FPGA_DEVICE_PATHS": ",".join(p for f in fpgas for p in f.paths),
    }


def _template(cmd: LaunchTask | KillTask, node: str) -> dict[str, Any]:
    """The fields every event about one task attempt on this node carries."""
    return {
        "job_key": cmd.job_key,
        "attempt_id": cmd.attempt_id,
        "task_role": cmd.task_role,
        "index": cmd.index,
        "task_attempt_id": cmd.task_attempt_id,
        "node": node,
    }


def _uses_ssh(entries: list[dict[str, Any]]) -> bool:
    return any(isinstance(e, dict) and plugins.plugin_name(e) == "ssh" for e in entries)


def _memory_mb() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total // (1024 * 1024))
    except ImportError:
        return 0


def main() -> None:
    Agent(RuntimeSettings()).app.run()
