"""GPU shares held on the node: one CUDA MPS control daemon per shared GPU.

The scheduler promises a task a share of one GPU (thousandths of its compute, MB of its memory). Where the
node has real GPUs (NVML) and NVIDIA's ``nvidia-cuda-mps-control``, the agent starts a control daemon for
each GPU that holds shares, when its first share task starts, and asks it to quit when its last one ended.
Each share task is an MPS client of its GPU's daemon, limited by CUDA's per-client variables:
``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` (its compute) and ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` (its memory).
Where either is missing, or on Kubernetes (where NVIDIA's device plugin shares GPUs through MPS itself), no
daemon runs: the registration (``gpu_sharing``) and each share task's status (``gpu_share``) say why.

The daemon of a GPU sees only that GPU (``CUDA_VISIBLE_DEVICES`` set to its UUID) and has its own pipe
and log folders, so its clients name their GPU as device 0.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pai_common.contract.types import GpuInfo, GpuShareStatus, GpuSharing

log = logging.getLogger(__name__)

CONTROL = "nvidia-cuda-mps-control"
# What the control program reads on its standard input to answer (is a daemon there?) or to stop.
PROBE = "get_server_list\n"
QUIT = "quit\n"
START_TIMEOUT_S = 30.0


def support(
    inventory_source: str, backend: str, which: Callable[[str], str | None] = shutil.which
) -> GpuSharing:
    """Whether this node can hold GPU shares with MPS, and if not, why (said in its registration)."""
    if backend == "kubernetes":
        return GpuSharing(
            mps=False,
            reason="tasks run as pods: GPU shares are enforced only where NVIDIA's device plugin shares GPUs"
            " with MPS; this agent starts no MPS daemon",
        )
    if inventory_source != "nvml":
        return GpuSharing(
            mps=False, reason=f"no GPU seen by NVML ({inventory_source} GPUs): GPU shares are not enforced"
        )
    if which(CONTROL) is None:
        return GpuSharing(mps=False, reason=f"{CONTROL} is not installed: GPU shares are not enforced")
    return GpuSharing(mps=True, reason="one CUDA MPS control daemon per shared GPU")


def gpu_folder(root: Path, gpu: GpuInfo) -> Path:
    return root / f"gpu{gpu.index}"


def daemon_env(root: Path, gpu: GpuInfo) -> dict[str, str]:
    """The environment of one GPU's control daemon (and of the commands that talk to it)."""
    folder = gpu_folder(root, gpu)
    return {
        "CUDA_VISIBLE_DEVICES": gpu.uuid,
        "CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"),
        "CUDA_MPS_LOG_DIRECTORY": str(folder / "log"),
    }


def start_command(control: str = CONTROL) -> list[str]:
    """``-d``: the control program forks the daemon and returns once it runs."""
    return [control, "-d"]


def client_env(root: Path, gpu: GpuInfo, milli: int, memory_mb: int) -> dict[str, str]:
    """What a share task needs to be a limited client of its GPU's daemon."""
    daemon = daemon_env(root, gpu)
    env = {
        "CUDA_MPS_PIPE_DIRECTORY": daemon["CUDA_MPS_PIPE_DIRECTORY"],
        "CUDA_MPS_LOG_DIRECTORY": daemon["CUDA_MPS_LOG_DIRECTORY"],
        # The daemon sees one GPU: its clients call it device 0.
        "CUDA_VISIBLE_DEVICES": "0",
    }
    if milli:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(max(1, milli // 10))
    if memory_mb:
        env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"0={memory_mb}M"
    return env


@dataclass(frozen=True)
class Ran:
    code: int
    output: str


async def run(
    argv: list[str], env: dict[str, str], stdin: str = "", timeout_s: float = START_TIMEOUT_S
) -> Ran:
    """Run a control command with the daemon's environment only added to PATH (nothing else leaks)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", **env},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return Ran(124, f"{argv[0]} did not answer within {timeout_s:g} s")
    return Ran(proc.returncode or 0, out.decode(errors="replace").strip()[-500:])


@dataclass
class MpsDaemons:
    """The control daemons of one node, by GPU index, with the runs that use each one."""

    root: Path
    sharing: GpuSharing
    control: str = CONTROL
    users: dict[int, set[str]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def acquire(
        self, gpu: GpuInfo, run_id: str, milli: int, memory_mb: int
    ) -> tuple[dict[str, str], GpuShareStatus]:
        """The client environment of a share task on ``gpu`` and how its share is held; the GPU's daemon is
        started first where none runs. Without MPS (or when the daemon fails to start) the environment is
        empty and the status says why: the task runs with the share the scheduler promised, unenforced."""
        unenforced = GpuShareStatus(
            milli=milli, memory_mb=memory_mb, enforced=False, note=self.sharing.reason
        )
        if not self.sharing.mps:
            return {}, unenforced
        async with self._lock:
            if not self.users.get(gpu.index):
                failure = await self._ensure_daemon(gpu)
                if failure is not None:
                    return {}, unenforced.model_copy(update={"note": failure})
            self.users.setdefault(gpu.index, set()).add(run_id)
        limits = f"{max(1, milli // 10)}% of its threads" if milli else "no thread limit"
        memory = f"{memory_mb} MB of pinned memory" if memory_mb else "no memory limit"
        note = f"CUDA MPS client of GPU {gpu.index}'s daemon: {limits}, {memory}"
        return client_env(self.root, gpu, milli, memory_mb), unenforced.model_copy(
            update={"enforced": True, "note": note}
        )

    async def adopt(self, gpu: GpuInfo, run_id: str) -> None:
        """A share task that outlived an agent restart keeps its GPU's daemon in use."""
        if self.sharing.mps:
            async with self._lock:
                self.users.setdefault(gpu.index, set()).add(run_id)

    async def release(self, gpu: GpuInfo, run_id: str) -> None:
        """The task ended; the last one of a GPU stops its daemon."""
        async with self._lock:
            users = self.users.get(gpu.index)
            if users is None or run_id not in users:
                return
            users.discard(run_id)
            if users:
                return
            del self.users[gpu.index]
            done = await run([self.control], daemon_env(self.root, gpu), QUIT)
            if done.code != 0:
                log.warning("MPS daemon did not quit", extra={"gpu": gpu.index, "output": done.output})

    async def _ensure_daemon(self, gpu: GpuInfo) -> str | None:
        """Start the GPU's daemon unless one answers already (an earlier agent's); None once it runs, else
        why not."""
        env = daemon_env(self.root, gpu)
        for key in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"):
            Path(env[key]).mkdir(parents=True, exist_ok=True)
        if (await run([self.control], env, PROBE)).code == 0:
            return None
        started = await run(start_command(self.control), env)
        if started.code != 0:
            why = (
                f"the MPS control daemon of GPU {gpu.index} did not start ({started.code}): {started.output}"
            )
            log.warning("MPS daemon not started", extra={"gpu": gpu.index, "output": started.output})
            return f"{why}; GPU shares on it are not enforced"
        return None
