"""Tasks as local processes: a supervisor per task attempt, on the host or with the job's image.

The task's directory holds its scripts, its logs and its exit record (``local_process``); a restarted
agent adopts the tasks by pid."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

from pai_common.contract.commands import LaunchTask
from pai_runtime import (
    barrier,
    containers,
    limits,
    local_mounts,
    local_process,
    membership,
    notice,
    supervisor,
)
from pai_runtime.backend import (
    PORT_CONFLICT_EXIT,
    STORAGE_MOUNT_EXIT,
    Ended,
    LogText,
    SetupError,
    Started,
    TaskFiles,
    TaskPaths,
)
from pai_runtime.settings import RuntimeSettings

LOG_TAIL_BYTES = 4096


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As servers bind: a port held only by connections in TIME_WAIT is free to listen on.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def container_name(cmd: LaunchTask) -> str:
    raw = f"pai-{cmd.job_key}-{cmd.attempt_id}-{cmd.task_role}-{cmd.index}-{cmd.task_attempt_id}"
    return "".join(c if c.isalnum() or c in "_.-" else "-" for c in raw)


def _write_private(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class LocalBackend:
    def __init__(self, settings: RuntimeSettings, node: str, root: Path) -> None:
        self.settings = settings
        self.node = node
        # The agent's own folder (task directories under runs/).
        self.root = root
        self._cgroup_root = limits.usable_cgroup_root(settings.cgroup_root)
        self._sshd = containers.find_sshd()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        await local_process.ForkServer.close()

    def paths(self, workdir: Path) -> TaskPaths:
        return TaskPaths(
            str(workdir), sys.executable, barrier.__file__, self._sshd, str(workdir / notice.FILE_NAME)
        )

    def mounts(self, cmd: LaunchTask, credentials: dict[str, dict[str, str]]) -> local_mounts.MountPlan:
        engine = containers.choose(self.settings.container_engine, cmd.image)
        return local_mounts.plan(cmd.mounts, credentials, self.node, engine)

    async def launch(
        self, cmd: LaunchTask, workdir: Path, task: TaskFiles, mounts: local_mounts.MountPlan | None
    ) -> Started:
        pid_file = workdir / supervisor.PID_FILE
        if pid_file.exists():
            # Started by a previous delivery whose commit did not happen: adopt it, never start twice.
            backend = "host"
            with contextlib.suppress(OSError):
                backend = (workdir / "backend").read_text().strip()
            cgroup = None
            with contextlib.suppress(OSError):
                cgroup = (workdir / "cgroup").read_text().strip() or None
            pid = int(pid_file.read_text())
            return Started({"pid": pid, "cgroup": cgroup}, backend, pid)
        workdir.mkdir(parents=True, exist_ok=True)
        if not task.failed:
            busy = [p for ports in cmd.ports.values() for p in ports if not port_free(p)]
            if busy:
                raise SetupError(PORT_CONFLICT_EXIT, f"ports already in use on {self.node}: {busy}")
        backend, cgroup = ("host", None) if task.failed else self._prepare(cmd, workdir, task, mounts)
        if task.failed:
            local_process.prepare(workdir, task.entrypoint, limits=local_process.Limits())
        # What a redelivered launch adopts; absent: the host and no cgroup (two files fewer per task).
        for name, value in (("backend", "" if backend == "host" else backend), ("cgroup", cgroup or "")):
            if value:
                (workdir / name).write_text(value)
            else:
                (workdir / name).unlink(missing_ok=True)  # left by an earlier delivery that did not start
        argv = None  # forked by the agent's fork server (local_process.start)
        if mounts is not None and mounts.needs_namespace and not task.failed:
            argv = local_mounts.in_private_namespace(local_process.command(workdir))
        pid = await local_process.start(
            workdir, local_process.task_env(dict(os.environ), task.env, workdir), argv
        )
        return Started({"pid": pid, "cgroup": cgroup}, backend, pid)

    def _prepare(
        self, cmd: LaunchTask, workdir: Path, task: TaskFiles, mounts: local_mounts.MountPlan | None
    ) -> tuple[str, str | None]:
        """Write the task's files and its supervisor's configuration; (backend, cgroup)."""
        for rel, (content, mode) in task.files.items():
            _write_private(workdir / rel, content, mode)
        entrypoint = task.entrypoint
        env = task.env
        backend = "host"
        engine = containers.choose(self.settings.container_engine, cmd.image)
        if engine and cmd.image:
            _write_private(workdir / "user-in-container.sh", entrypoint + "\n")
            env_file = workdir / ".task.env"
            _write_private(
                env_file, "".join(f"{k}={v}\n" for k, v in env.items() if "\n" not in v and k != "PATH")
            )
            # A CUDA MPS client reaches its GPU's daemon through its pipe folder and the host's IPC.
            mps = [env[k] for k in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY") if k in env]
            argv = containers.run_command(
                engine, cmd.image, container_name(cmd), workdir, env_file, "user-in-container.sh",
                cmd.gpus, cmd.cpu, cmd.memory_mb, cmd.shm_mb,
                [*(mounts.volumes if mounts else []), *(f"{d}:{d}" for d in mps)],
                devices=[p for fpga in task.fpgas for p in fpga.paths], ipc_host=bool(mps),
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
        local_process.prepare(
            workdir, entrypoint, task.pre, task.post, task_limits, self._mount_config(workdir, mounts)
        )
        return backend, cgroup

    def _mount_config(self, workdir: Path, mounts: local_mounts.MountPlan | None) -> dict[str, Any]:
        """What the supervisor needs to mount the task's storages; the credentials written 0600 in a
        folder of the agent's (not the task's home), which the supervisor removes once mounted."""
        if mounts is None or not mounts.needs_namespace:
            return {}
        secrets = (
            self.root / "mount-secrets" / workdir.relative_to(self.root / "runs").as_posix().replace("/", "_")
        )
        if mounts.secret_files:
            secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
            for name, content in mounts.secret_files.items():
                _write_private(secrets / name, content)
        return {
            "mounts": mounts.supervisor_steps(secrets),
            "mount_secrets": str(secrets),
            "mount_failed_exit": STORAGE_MOUNT_EXIT,
            "host_mount_namespace": os.readlink("/proc/self/ns/mnt"),
        }

    async def wait(self, run: dict[str, Any]) -> Ended:
        workdir = Path(run["workdir"])
        result = await local_process.wait(int(run["pid"]), workdir)
        if run.get("cgroup"):
            limits.remove_cgroup(Path(run["cgroup"]))
        tail, _, _ = local_process.tail_rotated(workdir / "all.log", LOG_TAIL_BYTES)
        if result.timed_out:
            note = "\n[openpai-runtime] the task reached its time limit and was stopped"
            tail = (tail + note)[-LOG_TAIL_BYTES:]
        return Ended(result, tail)

    async def kill(self, run: dict[str, Any], grace_s: float) -> None:
        await local_process.stop(int(run["pid"]), grace_s)

    async def notify(self, run: dict[str, Any], content: dict[str, Any]) -> bool:
        # In the task's directory, which a task in its image sees at the same path.
        await asyncio.to_thread(notice.write, Path(run["workdir"]) / notice.FILE_NAME, content)
        return True

    async def membership(self, run: dict[str, Any], text: str) -> bool:
        # The task's folder, which a task in its image sees at the same path; then its process group.
        if await asyncio.to_thread(membership.write, Path(run["workdir"]) / membership.FILE_NAME, text):
            return membership.signal_group(int(run["pid"]))
        return True  # a newer membership is there already: the task was told of it

    async def logs(self, run: dict[str, Any], stream: str, tail_bytes: int) -> LogText:
        path = Path(run["workdir"]) / f"{stream}.log"
        if not path.exists():
            raise FileNotFoundError(path)
        content, size, truncated = await asyncio.to_thread(local_process.tail_rotated, path, tail_bytes)
        return LogText(content, size, truncated)
