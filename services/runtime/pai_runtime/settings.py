from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from pai_common.bus_permissions import node_durable
from pai_common.contract.base import NODE_NAME_MAX, NODE_NAME_PATTERN
from pai_common.settings import Settings


def _default_node() -> str:
    return socket.gethostname()


class RuntimeSettings(Settings):
    # Kubernetes node names (DNS-1123 subdomains, e.g. ip-10-0-0-1.ec2.internal) are accepted.
    node_name: str = Field(default_factory=_default_node, max_length=NODE_NAME_MAX, pattern=NODE_NAME_PATTERN)
    host_ip: str = "127.0.0.1"
    # Used only where NVML finds no GPU and no inventory file is given: how many simulated GPUs.
    simulated_gpus: int = Field(default=4, ge=0, le=64)
    force_simulated: bool = False
    # Declared devices (GPUs where NVML is absent, FPGAs, InfiniBand): see devices.py for the format.
    inventory_file: Path | None = None
    kill_grace_s: float = Field(default=10.0, ge=0)
    heartbeat_s: float = Field(default=5.0, gt=0)
    # How often the agent re-checks its GPUs' health and samples its tasks' resource use.
    health_check_s: float = Field(default=30.0, gt=0)
    metrics_s: float = Field(default=15.0, gt=0)
    # Where tasks run: local processes (optionally in the job's image), or Kubernetes pods.
    backend: Literal["local", "kubernetes"] = "local"
    container_engine: Literal["none", "auto", "docker", "podman"] = "none"
    # Per stream: rotate at this size, keep this many files (OpenPAI: 2 x 256 MB).
    log_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    log_keep_files: int = Field(default=2, ge=1, le=100)
    # A finished task's working directory and logs are kept this long, then deleted.
    log_retention_s: float = Field(default=7 * 24 * 3600, ge=0)
    # 0: no limit. A task running longer is stopped (SIGTERM, grace, SIGKILL).
    task_timeout_s: float = Field(default=0, ge=0)
    # A delegated cgroup v2 directory for CPU/memory limits.
    cgroup_root: Path | None = None
    # Without cgroups: limit each CPU-only task's processes' address space (ulimit -v) to its memoryMB.
    # Off by default: address space is not memory use (thread stacks, arenas and JIT runtimes reserve far
    # more than they touch), so a correct job could be refused memory it never uses.
    address_space_limit: bool = False
    # Shared by every agent of the cluster: the ssh plugin derives each job's key pair from it (jobssh.py).
    # Unset: the embedded platform keeps one in its data directory (all agents share it there).
    job_ssh_secret: SecretStr | None = None
    job_ssh_secret_file: Path | None = None
    secrets_timeout_s: float = Field(default=5.0, gt=0)
    # Kubernetes backend.
    k8s_namespace: str = "default"
    k8s_in_cluster: bool = False
    k8s_kubeconfig: Path | None = None
    # A folder on every node (mounted at the same path into the agent's pod) where preemption notices are
    # written for the task pods to read; None: pods get SIGTERM and the grace, but no notice file.
    k8s_notice_dir: Path | None = None

    def bus_user(self, service: str) -> str | None:
        # With a token (Kubernetes' auth callout) the URL names no user: the callout makes this node's own,
        # runtime-<node>, and only that user's inbox is this agent's to read.
        return node_durable(self.node_name) if self.nats_token_file is not None else None
