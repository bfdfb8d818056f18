"""The ssh plugin's job-wide key pair and ssh configuration.

Every task of a job must hold the same key pair, and tasks run on different nodes whose agents do not
talk to each other. The pair is therefore derived, not stored: an Ed25519 key whose seed is an HMAC of
the job's key under a secret the agents share. Whoever lacks that secret cannot derive a job's key; every
agent that has it derives the same one.

Where the shared secret comes from, first found wins: ``PAI_JOB_SSH_SECRET`` (the value);
``PAI_JOB_SSH_SECRET_FILE`` (a file every agent reads: a Kubernetes Secret mounted read-only, or a file
on a volume the agents share, which the first agent creates); else ``<data dir>/runtime/job-ssh.secret``,
which the agents of one machine share (``pai up``). Agents with data directories of their own (one per
container or pod) must be given one of the first two, or each derives other keys and ssh across nodes
fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

if TYPE_CHECKING:
    from pai_runtime.settings import RuntimeSettings

MIN_SECRET_BYTES = 16


def shared_secret(settings: RuntimeSettings) -> bytes:
    """The cluster's job-ssh secret (see the module's docstring for where it comes from)."""
    if settings.job_ssh_secret is not None:
        value = settings.job_ssh_secret.get_secret_value().encode()
        where = "PAI_JOB_SSH_SECRET"
    else:
        path = settings.job_ssh_secret_file or Path(settings.data_dir) / "runtime" / "job-ssh.secret"
        value = _read_or_create(path.resolve())
        where = str(path)
    if len(value) < MIN_SECRET_BYTES:
        raise ValueError(f"the job ssh secret from {where} is shorter than {MIN_SECRET_BYTES} bytes")
    return value


def _read_or_create(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # the first agent wins; the others read its secret
        tmp.unlink()
    return path.read_bytes().strip()


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
