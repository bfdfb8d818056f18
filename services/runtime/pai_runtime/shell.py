"""The node agent: registers its node, launches and stops tasks on command, reports their exits."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets as random_secrets
import shlex
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pai_common.consumer import HandlerContext
from pai_common.contract.base import COMMAND_SUBJECT_PREFIX, heartbeat_subject
from pai_common.contract.commands import KillTask, LaunchTask
from pai_common.contract.events import NodeRegistered, TaskExited, TaskRunning
from pai_common.contract.rpc import JobSecretsReply, JobSecretsRequest, TaskLogReply, TaskLogRequest
from pai_common.envelope import Envelope
from pai_common.errors import NoTaskLogError, PaiError, ServiceUnavailableError
from pai_common.service import ServiceApp
from pai_runtime import barrier, containers, k8s_manifest, limits, local_process, metrics, plugins
from pai_runtime import secrets as job_secrets
from pai_runtime.devices import Inventory, detect, load_inventory, nvml_gpu_report, nvml_health
from pai_runtime.k8s_status import PodOutcome
from pai_runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

RUNS = "runs"
LOG_TAIL_BYTES = 4096
SECRETS_FILE = ".secrets.json"
# OpenPAI's exit code for a port already taken on the node (its init port checker: 10 → 253).
PORT_CONFLICT_EXIT = 253
# A task the runtime could not set up (bad plugin entry, unknown secret): a user error, as OpenPAI's init.
SETUP_FAILED_EXIT = 1


def now_ms() -> int:
    return int(time.time() * 1000)


def run_id(job_key: str, attempt_id: int, role: str, index: int, task_attempt_id: int = 0) -> str:
    return f"{job_key}/{attempt_id}/{role}/{index}/{task_attempt_id}"


class SetupError(Exception):
    """The task cannot start as asked; it ends at once with this code and message in its logs."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Running:
    pid: int
    workdir: Path
    gpus: list[int]
    labels: dict[str, str]
    cgroup: str | None = None


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As servers bind: a port held only by connections in TIME_WAIT is free to listen on.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


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
    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.node = settings.node_name
        # Each node keeps its own collection: agents on one machine share the service's database.
        self.runs_collection = f"{RUNS}_{self.node}"
        self.app = ServiceApp("runtime", settings)
        self.root = Path(settings.data_dir).resolve() / "runtime" / self.node
        self._watchers: set[asyncio.Task[None]] = set()
        self._running: dict[str, Running] = {}
        # Set at start-up when tasks run as Kubernetes pods (settings.backend == "kubernetes").
        self.k8s: Any = None
        self._sampler = metrics.TaskSampler()
        self._inventory: Inventory | None = None
        self._cgroup_root = limits.usable_cgroup_root(settings.cgroup_root)
        self._sshd = shutil.which("sshd") or next(
            (p for p in ("/usr/sbin/sshd", "/usr/bin/sshd") if os.access(p, os.X_OK)), None
        )
        self.app.on_commands(
            f"runtime-{self.node}", f"{COMMAND_SUBJECT_PREFIX}.runtime.{self.node}.>", self.handle_command
        )
        self.app.rpc({TaskLogRequest: self.task_log}, target=self.node)
        self.app.on_startup(self._connect_kubernetes)
        self.app.on_startup(self._register)
        self.app.on_startup(self._resume)
        self.app.on_shutdown(self._stop_watching)
        self.app.background(self._heartbeat)
        self.app.background(self._watch_health)
        self.app.background(self._sample_tasks)
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
            event = run["event"]
            if run.get("pod"):
                self._watch_pod(run["_id"], run["pod"], Path(run["workdir"]), event)
                continue
            self._watch(run["_id"], int(run["pid"]), Path(run["workdir"]), event, list(run.get("gpus", [])))

    async def _connect_kubernetes(self, app: ServiceApp) -> None:
        if self.settings.backend != "kubernetes" or self.k8s is not None:
            return
        from pai_runtime import k8s_backend

        core = await asyncio.to_thread(
            k8s_backend.connect, self.settings.k8s_in_cluster, self.settings.k8s_kubeconfig
        )
        self.k8s = k8s_backend.KubernetesBackend(core, self.pod_options())

    def pod_options(self) -> k8s_manifest.PodOptions:
        return k8s_manifest.PodOptions(
            namespace=self.settings.k8s_namespace, grace_period_s=int(self.settings.kill_grace_s)
        )

    async def _stop_watching(self, app: ServiceApp) -> None:
        """The tasks keep running without the agent; the next agent adopts them (``_resume``)."""
        for task in list(self._watchers):
            task.cancel()
        for running in self._running.values():
            metrics.remove(running.labels)
        self._running.clear()

    # ---- commands ------------------------------------------------------------------------------------

    async def handle_command(self, ctx: HandlerContext, env: Envelope) -> None:
        if isinstance(env.body, LaunchTask):
            await self.launch(ctx, env.body)
        elif isinstance(env.body, KillTask):
            await self.kill(ctx, env.body)
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

    def _ssh_secret(self) -> bytes:
        if self.settings.job_ssh_secret is not None:
            return self.settings.job_ssh_secret.get_secret_value().encode()
        path = Path(self.settings.data_dir).resolve() / "runtime" / "job-ssh.secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(random_secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)  # the first agent wins; the others read its secret
            tmp.unlink()
        return path.read_bytes().strip()

    async def _commands(
        self, cmd: LaunchTask, workdir: Path, env: dict[str, str], home: str, python: str, barrier_script: str
    ) -> tuple[dict[str, Any], str, plugins.PluginOutput]:
        """The job's secrets, the rendered user commands and the plugins' output for one task."""
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
                    home=home,
                    python=python,
                    barrier_script=barrier_script,
                    sshd=self._sshd if self.k8s is None else "auto",
                    job_ssh_secret=self._ssh_secret() if _uses_ssh(cmd.plugins) else b"",
                    job_secrets=secrets,
                ),
            )
        except (plugins.PluginError, job_secrets.SecretNotFoundError) as exc:
            raise SetupError(SETUP_FAILED_EXIT, str(exc)) from exc
        return secrets, entrypoint, built

    async def _set_up(self, cmd: LaunchTask, workdir: Path, env: dict[str, str]) -> tuple[str, str]:
        """Write the task's files; (backend, cgroup). Raises SetupError for a task that cannot run."""
        busy = [p for ports in cmd.ports.values() for p in ports if not port_free(p)]
        if busy:
            raise SetupError(PORT_CONFLICT_EXIT, f"ports already in use on {self.node}: {busy}")
        _, entrypoint, built = await self._commands(
            cmd, workdir, env, str(workdir), sys.executable, barrier.__file__
        )
        for rel, (content, mode) in built.files.items():
            path = workdir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "w") as f:
                f.write(content)
        env.update(built.env)
        backend = "host"
        engine = containers.choose(self.settings.container_engine, cmd.image)
        if engine and cmd.image:
            (workdir / "user-in-container.sh").write_text(entrypoint + "\n")
            (workdir / "user-in-container.sh").chmod(0o600)
            env_file = workdir / ".task.env"
            fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.writelines(f"{k}={v}\n" for k, v in env.items() if "\n" not in v and k != "PATH")
            argv = containers.run_command(
                engine, cmd.image, _container_name(cmd), workdir, env_file, "user-in-container.sh",
                cmd.gpus, cmd.cpu, cmd.memory_mb, cmd.shm_mb,
            )  # fmt: skip
            entrypoint = "exec " + shlex.join(argv)
            backend = engine
        cgroup = None
        if self._cgroup_root is not None:
            name = "pai-" + hashlib.sha256(str(workdir).encode()).hexdigest()[:16]
            group = limits.prepare_cgroup(self._cgroup_root, name, cmd.cpu, cmd.memory_mb)
            cgroup = str(group) if group else None
        task_limits = local_process.Limits(
            log_max_bytes=self.settings.log_max_bytes,
            log_keep=self.settings.log_keep_files,
            timeout_s=self.settings.task_timeout_s or None,
            grace_s=self.settings.kill_grace_s,
            memory_limit_kb=(
                limits.address_space_kb(cmd.memory_mb, cmd.gpus)
                if cgroup is None and self.settings.address_space_limit
                else None
            ),
            cgroup=cgroup,
        )
        local_process.prepare(workdir, entrypoint, built.pre_script, built.post_script, task_limits)
        return backend, cgroup or ""

    async def launch(self, ctx: HandlerContext, cmd: LaunchTask) -> None:
        rid = run_id(cmd.job_key, cmd.attempt_id, cmd.task_role, cmd.index, cmd.task_attempt_id)
        runs = ctx.db[self.runs_collection]
        if await runs.find_one({"_id": rid}, {"_id": 1}, session=ctx.session):
            return  # launched already: a command is done once
        workdir = self.workdir(cmd.job_key, cmd.attempt_id, cmd.task_role, cmd.index, cmd.task_attempt_id)
        if self.k8s is not None:
            await self.launch_pod(ctx, cmd, rid, workdir)
            return
        pid_file = workdir / "pid"
        backend, cgroup = "host", ""
        if pid_file.exists():
            # Started by a previous delivery whose commit did not happen: adopt it, never start twice.
            pid = int(pid_file.read_text())
            with contextlib.suppress(OSError):
                backend = (workdir / "backend").read_text().strip()
        else:
            workdir.mkdir(parents=True, exist_ok=True)
            env = self.task_env(cmd)
            try:
                backend, cgroup = await self._set_up(cmd, workdir, env)
            except SetupError as exc:
                # The task still runs, as a one-line script: its logs and exit tell the user what failed.
                message = f"[openpai-runtime] task not started: {exc}"
                local_process.prepare(
                    workdir,
                    f"echo {shlex.quote(message)} >&2\nexit {exc.code}",
                    limits=local_process.Limits(),
                )
                log.warning("task set-up failed", extra={"run": rid, "exit_code": exc.code})
            (workdir / "backend").write_text(backend)
            pid = await local_process.start(workdir, local_process.task_env(dict(os.environ), env, workdir))
        started = now_ms()
        template = _template(cmd, self.node)
        await runs.insert_one(
            {
                "_id": rid,
                "status": "running",
                "pid": pid,
                "workdir": str(workdir),
                "started_at": started,
                "event": template,
                "gpus": cmd.gpus,
                "cgroup": cgroup,
                # Whether the job ran on the host or in its image.
                "backend": backend,
            },
            session=ctx.session,
        )
        ctx.out.event(
            TaskRunning(
                **template, host_ip=self.settings.host_ip, pid=pid, started_at=started, backend=backend
            ),
            msg_id=f"running:{rid}",
        )
        self._watch(rid, pid, workdir, template, cmd.gpus, cgroup or None)
        log.info("task launched", extra={"run": rid, "pid": pid, "backend": backend})

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

    async def launch_pod(self, ctx: HandlerContext, cmd: LaunchTask, rid: str, workdir: Path) -> None:
        """The task as a Pod bound to this node; its scripts and the job's secrets in its Secret."""
        from pai_runtime import k8s_backend

        workdir.mkdir(parents=True, exist_ok=True)
        home = "/usr/local/pai/work"
        env = {**self.task_env(cmd), "HOME": home}
        options = self.pod_options()
        try:
            secrets, entrypoint, built = await self._commands(
                cmd, workdir, env, home, "python3", f"{k8s_manifest.TASK_DIR}/barrier.py"
            )
            pre = "\n".join(filter(None, [k8s_backend.files_script(built.files, home), built.pre_script]))
            scripts = {"pre.sh": pre, "user.sh": entrypoint, "post.sh": built.post_script}
        except SetupError as exc:
            secrets = {}
            scripts = {"user.sh": f"echo {shlex.quote(f'[openpai-runtime] task not started: {exc}')} >&2\n"
                       f"exit {exc.code}"}  # fmt: skip
            built = plugins.PluginOutput()
        env.update(built.env)
        pod = k8s_manifest.pod_manifest(cmd, env, options)
        scripts["barrier.py"] = Path(barrier.__file__).read_text()
        secret = k8s_manifest.secret_manifest(cmd, options, scripts, secrets)
        uid = await asyncio.to_thread(self.k8s.create, pod, secret)
        name = pod["metadata"]["name"]
        started = now_ms()
        template = _template(cmd, self.node)
        await ctx.db[self.runs_collection].insert_one(
            {
                "_id": rid, "status": "running", "pid": 0, "pod": name, "pod_uid": uid,
                "workdir": str(workdir), "started_at": started, "event": template, "gpus": cmd.gpus,
                "backend": "kubernetes",
            },
            session=ctx.session,
        )  # fmt: skip
        ctx.out.event(
            TaskRunning(
                **template, host_ip=self.settings.host_ip, pid=0, started_at=started, backend="kubernetes"
            ),
            msg_id=f"running:{rid}",
        )
        self._watch_pod(rid, name, workdir, template)
        log.info("task pod created", extra={"run": rid, "pod": name})

    def _watch_pod(self, rid: str, name: str, workdir: Path, template: dict[str, Any]) -> None:
        async def report() -> None:
            outcome: PodOutcome = await asyncio.to_thread(self.k8s.wait, name)
            try:
                tail = await asyncio.to_thread(self.k8s.logs, name, LOG_TAIL_BYTES)
            except Exception as exc:  # the exit matters more than its log
                log.warning("pod log not read", extra={"pod": name, "error": repr(exc)})
                tail = ""
            if outcome.message:
                tail = (tail + "\n" + outcome.message)[-LOG_TAIL_BYTES:]
            await self._record_exit(
                rid,
                template,
                local_process.TaskExit(outcome.exit_code or 0, outcome.signal),
                job_secrets.mask(tail, self._secret_values(workdir)),
                pod_reason=outcome.pod_reason,
                container_reason=outcome.container_reason,
            )

        task = asyncio.create_task(report(), name=f"watch-pod:{rid}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def kill(self, ctx: HandlerContext, cmd: KillTask) -> None:
        rid = run_id(cmd.job_key, cmd.attempt_id, cmd.task_role, cmd.index, cmd.task_attempt_id)
        run = await ctx.db[self.runs_collection].find_one({"_id": rid}, session=ctx.session)
        if run is None or run["status"] != "running":
            return
        await ctx.db[self.runs_collection].update_one(
            {"_id": rid}, {"$set": {"stop_reason": cmd.reason}}, session=ctx.session
        )
        # The stop runs beside the consumer; the watcher reports the exit as for any other end.
        if run.get("pod"):
            task = asyncio.create_task(asyncio.to_thread(self.k8s.delete, run["pod"], cmd.grace_period_s))
        else:
            task = asyncio.create_task(local_process.stop(int(run["pid"]), cmd.grace_period_s))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    # ---- exits ---------------------------------------------------------------------------------------

    def _watch(
        self,
        rid: str,
        pid: int,
        workdir: Path,
        template: dict[str, Any],
        gpus: list[int],
        cgroup: str | None = None,
    ) -> None:
        labels = {
            "node": self.node,
            "job": str(template["job_key"]),
            "task_role": str(template["task_role"]),
            "index": str(template["index"]),
            "task_attempt": str(template.get("task_attempt_id", 0)),
        }
        self._running[rid] = Running(pid, workdir, gpus, labels, cgroup)
        task = asyncio.create_task(self._report_exit(rid, pid, workdir, template), name=f"watch:{rid}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _secret_values(self, workdir: Path) -> list[str]:
        try:
            loaded = json.loads((workdir / SECRETS_FILE).read_text())
        except (OSError, ValueError):
            return []
        return [str(v) for v in loaded] if isinstance(loaded, list) else []

    async def _report_exit(self, rid: str, pid: int, workdir: Path, template: dict[str, Any]) -> None:
        result = await local_process.wait(pid, workdir)
        running = self._running.pop(rid, None)
        if running is not None:
            metrics.remove(running.labels)
            if running.cgroup:
                limits.remove_cgroup(Path(running.cgroup))
        tail, _, _ = local_process.tail_rotated(workdir / "all.log", LOG_TAIL_BYTES)
        tail = job_secrets.mask(tail, self._secret_values(workdir))
        if result.timed_out:
            note = "\n[openpai-runtime] the task reached its time limit and was stopped"
            tail = (tail + note)[-LOG_TAIL_BYTES:]
        gpu_health = None
        if running is not None and running.gpus and self._inventory and self._inventory.source == "nvml":
            gpu_health = await asyncio.to_thread(nvml_gpu_report, running.gpus)
        await self._record_exit(rid, template, result, tail, gpu_health=gpu_health)

    async def _record_exit(
        self,
        rid: str,
        template: dict[str, Any],
        result: local_process.TaskExit,
        tail: str,
        pod_reason: str | None = None,
        container_reason: str | None = None,
        gpu_health: dict[str, Any] | None = None,
    ) -> None:
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
                                "signal": result.signal,
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
                                log_tail=tail,
                                finished_at=finished,
                                pod_reason=pod_reason,
                                container_reason=container_reason,
                                gpu_health=gpu_health,
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

    async def _pod_log(self, req: TaskLogRequest, workdir: Path) -> TaskLogReply:
        """A pod's log as the kubelet keeps it: stdout and stderr together, whichever stream is asked."""
        rid = run_id(req.job_key, req.attempt_id, req.task_role, req.index, req.task_attempt_id)
        run = await self.app.db[self.runs_collection].find_one({"_id": rid})
        if run is None or not run.get("pod"):
            raise NoTaskLogError(f"no pod for {req.job_key} {req.task_role}[{req.index}] on {self.node}")
        content = await asyncio.to_thread(self.k8s.logs, run["pod"], req.tail_bytes)
        masked = job_secrets.mask(content, self._secret_values(workdir))
        return TaskLogReply(content=masked, size=len(content.encode()), truncated=False)

    async def task_log(self, req: TaskLogRequest) -> TaskLogReply:
        workdir = self.workdir(req.job_key, req.attempt_id, req.task_role, req.index, req.task_attempt_id)
        if self.k8s is not None:
            return await self._pod_log(req, workdir)
        path = workdir / f"{req.stream}.log"
        if not path.exists():
            raise NoTaskLogError(
                f"no {req.stream} log for {req.job_key} {req.task_role}[{req.index}]"
                f" (task attempt {req.task_attempt_id}) on {self.node}"
            )
        content, size, truncated = local_process.tail_rotated(path, req.tail_bytes)
        return TaskLogReply(
            content=job_secrets.mask(content, self._secret_values(workdir)), size=size, truncated=truncated
        )


def _template(cmd: LaunchTask, node: str) -> dict[str, Any]:
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


def _container_name(cmd: LaunchTask) -> str:
    raw = f"pai-{cmd.job_key}-{cmd.attempt_id}-{cmd.task_role}-{cmd.index}-{cmd.task_attempt_id}"
    return "".join(c if c.isalnum() or c in "_.-" else "-" for c in raw)


def _memory_mb() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total // (1024 * 1024))
    except ImportError:
        return 0


def main() -> None:
    Agent(RuntimeSettings()).app.run()
