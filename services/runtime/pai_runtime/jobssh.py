"""The ssh plugin's job-wide key pair and ssh configuration.

Every task of a job must hold the same key pair, and tasks run on different nodes whose agents do not
talk to each other. The pair is therefore derived, not stored: an Ed25519 key whose seed is an HMAC of
the job's key under a secret the agents share (``PAI_JOB_SSH_SECRET``). Whoever lacks that secret
cannot derive a job's key; every agent that has it derives the same one.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class KeyPair:
    private_openssh: str
    public_openssh: str


def job_key_pair(secret: bytes, job_key: str) -> KeyPair:
    if not secret:
        raise ValueError("the job ssh secret is empty; set PAI_JOB_SSH_SECRET on every agent")
    seed = hmac.new(secret, f"pai-job-ssh|{job_key}".encode(), hashlib.sha256).digest()
    key = Ed25519PrivateKey.from_private_bytes(seed)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return KeyPair(private, f"{public} pai-job-ssh:{job_key}")


@dataclass(frozen=True)
class Peer:
    task_role: str
    index: int
    host_ip: str
    ssh_port: int | None


def peers(env: dict[str, str]) -> list[Peer]:
    """Every task of the gang, read from the PAI_* environment the task gets."""
    found = []
    for entry in filter(None, env.get("PAI_TASK_ROLE_INSTANCES", "").split(",")):
        role, _, idx = entry.rpartition(":")
        ip = env.get(f"PAI_HOST_IP_{role}_{idx}", "")
        ports = env.get(f"PAI_PORT_LIST_{role}_{idx}_ssh", "")
        found.append(Peer(role, int(idx), ip, int(ports.split(",")[0]) if ports else None))
    return found


def ssh_config(all_peers: list[Peer], identity_file: str) -> str:
    """``Host <role>-<index>`` for every task, so that ``ssh worker-1`` (and mpirun -H) just work."""
    blocks = []
    for p in all_peers:
        if not p.host_ip or p.ssh_port is None:
            continue
        blocks.append(
            f"Host {p.task_role}-{p.index}\n"
            f"  HostName {p.host_ip}\n"
            f"  Port {p.ssh_port}\n"
            f"  IdentityFile {identity_file}\n"
            "  StrictHostKeyChecking no\n"
            "  UserKnownHostsFile /dev/null\n"
            "  LogLevel ERROR\n"
        )
    return "\n".join(blocks)


def sshd_config(home: str, port: int) -> str:
    """An unprivileged sshd for the task: its own host key, the job's authorized keys, the task's port."""
    return (
        f"Port {port}\n"
        f"HostKey {home}/.ssh/host_ed25519\n"
        f"AuthorizedKeysFile {home}/.ssh/authorized_keys\n"
        f"PidFile {home}/.ssh/sshd.pid\n"
        "PasswordAuthentication no\n"
        "PubkeyAuthentication yes\n"
        "PermitUserEnvironment yes\n"
        "StrictModes no\n"
        "UsePAM no\n"
    )
