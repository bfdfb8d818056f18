"""Running a task in its job's image with Docker or Podman, where one of them is present and working.

The task's supervisor and logs stay on the host; only the user's commands run in the container, with
the host's network (as OpenPAI's pods), the task's working directory mounted at the same path, the
allocated GPUs only, and the task's limits.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path


@functools.cache
def available(engine: str) -> bool:
    """The engine's command exists and its daemon (or Podman's runtime) answers."""
    if shutil.which(engine) is None:
        return False
    try:
        return subprocess.run([engine, "info"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_sshd() -> str | None:
    """The sshd binary of this host, if one is installed (the ssh plugin starts it per task)."""
    return shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/usr/bin/sshd") if os.access(p, os.X_OK)), None
    )


def choose(setting: str, image: str | None) -> str | None:
    """The engine to use for a task: none without an image or when the operator chose none."""
    if not image or setting == "none":
        return None
    candidates = ("docker", "podman") if setting == "auto" else (setting,)
    return next((e for e in candidates if available(e)), None)


def run_command(
    engine: str,
    image: str,
    name: str,
    workdir: Path,
    env_file: Path,
    script: str,
    gpus: list[int],
    cpu: int,
    memory_mb: int,
    shm_mb: int,
    volumes: list[str] | None = None,
    devices: list[str] | None = None,
    ipc_host: bool = False,
) -> list[str]:
    """``devices``: device files the task gets (its FPGAs); ``ipc_host``: the host's IPC namespace, which
    a CUDA MPS client needs to reach its daemon (whose pipe folder is then one of the volumes)."""
    argv = [
        engine, "run", "--rm", "--name", name, "--network", "host", "--init",
        "--env-file", str(env_file), "-v", f"{workdir}:{workdir}", "-w", str(workdir),
    ]  # fmt: skip
    if gpus:
        argv += (
            ["--gpus", "device=" + ",".join(str(g) for g in gpus)]
            if engine == "docker"
            else ["--device", *[f"nvidia.com/gpu={g}" for g in gpus]]
        )
    if cpu:
        argv += ["--cpus", str(cpu)]
    if memory_mb:
        argv += ["--memory", f"{memory_mb}m"]
    if shm_mb:
        argv += ["--shm-size", f"{shm_mb}m"]
    for volume in volumes or []:  # the task's local storages: source:target[:ro]
        argv += ["-v", volume]
    for device in devices or []:
        argv += ["--device", device]
    if ipc_host:
        argv += ["--ipc", "host"]
    return [*argv, image, "bash", str(workdir / script)]
