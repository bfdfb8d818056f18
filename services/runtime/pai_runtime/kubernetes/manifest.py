"""The Kubernetes objects of one task: its Pod, and a Secret with its scripts and the job's secrets.

Pure: the same launch command and environment always give the same manifests (JSON as the API server
takes it). The Pod is bound to the node the scheduler chose (``nodeName``, no second scheduling), uses
the host's network (ports were chosen per host, as OpenPAI does), sees only its allocated GPUs
(``NVIDIA_VISIBLE_DEVICES``, as HiveD's leaf-cell isolation; the NVIDIA container runtime enforces it),
gets its CPU and memory as requests and limits, ``/dev/shm`` as a memory-backed emptyDir of the job's
size, its ports as host ports, the storages it mounts, and its environment. The user's commands, with
``$secrets`` rendered, travel only inside the Secret, never in the Pod spec.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from pai_common.contract.commands import LaunchTask
from pai_runtime.kubernetes.volumes import PodStorage

TASK_DIR = "/usr/local/pai/task"
# The task's working directory and HOME inside the pod.
HOME = "/usr/local/pai/work"
SECRETS_DIR = "/usr/local/pai/secrets"
# Where a pod finds its preemption notice: a folder of the node's (PodOptions.notice_host_dir) that the
# agent, running on the same node, writes into.
NOTICE_DIR = "/usr/local/pai/notice"
APP = "app"
# The files of the task's Secret mounted at TASK_DIR (barrier.py: the ssh plugin's barrier).
TASK_FILES = ("pre.sh", "user.sh", "post.sh", "barrier.py")
LABEL_PREFIX = "pai.microsoft.com/"
# OpenPAI's app container capabilities (FUSE mounts, RDMA memory pinning).
CAPABILITIES = {"add": ["SYS_ADMIN", "IPC_LOCK", "DAC_READ_SEARCH"], "drop": ["MKNOD"]}

# An elastic task's membership file changes while the pod runs (the agent rewrites it in the pod's node
# folder); the agent cannot signal a process in a container without an exec, so the pod watches the file's
# version line itself and sends SIGWINCH to its own process group (every phase) when it changes, as the
# local supervisor's agent does. SIGWINCH's default is to do nothing; bash (PID 1 here) ignores it.
MEMBERSHIP_WATCH_S = 1
MEMBERSHIP_WATCH = f"""if [ -n "${{PAI_MEMBERSHIP_FILE:-}}" ]; then
  (seen=$(head -n 1 "$PAI_MEMBERSHIP_FILE" 2>/dev/null || true)
   while sleep {MEMBERSHIP_WATCH_S}; do
     now=$(head -n 1 "$PAI_MEMBERSHIP_FILE" 2>/dev/null || true)
     if [ -n "$now" ] && [ "$now" != "$seen" ]; then seen=$now; kill -s WINCH 0; fi
   done) &
fi
"""

# Runs the phases as the local supervisor does: a failed phase ends the task with its code; post-commands
# run only after the user's commands succeeded.
BOOTSTRAP = f"""set -u
mkdir -p {HOME} && cd {HOME}
{MEMBERSHIP_WATCH}for phase in pre user post; do
  script={TASK_DIR}/$phase.sh
  [ -f "$script" ] || continue
  bash "$script" || exit $?
done
"""


@dataclass(frozen=True)
class PodOptions:
    namespace: str = "default"
    default_image: str = "ubuntu:22.04"
    grace_period_s: int = 30
    service_account: str | None = None
    scheduler_name: str | None = None
    extra_labels: dict[str, str] = field(default_factory=dict)
    # The node folder (under which each pod gets its own) for preemption notices; None: no notice file.
    notice_host_dir: str | None = None


def notice_host_path(options: PodOptions, pod: str) -> str | None:
    """The node's folder that the pod sees at NOTICE_DIR."""
    return f"{options.notice_host_dir.rstrip('/')}/{pod}" if options.notice_host_dir else None


def _dns_label(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def pod_name(cmd: LaunchTask) -> str:
    """A DNS-1123 name that differs for every task attempt, whatever the job key holds."""
    key = f"{cmd.job_key}|{cmd.attempt_id}|{cmd.task_role}|{cmd.index}|{cmd.task_attempt_id}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    readable = _dns_label(f"{cmd.job_key}-{cmd.task_role}-{cmd.index}")[:40].strip("-")
    return f"pai-{readable}-{digest}"


def _label_value(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:63]
    return value.strip("_.-") or "x"


def labels(cmd: LaunchTask) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "pai-runtime",
        f"{LABEL_PREFIX}job": _label_value(cmd.job_key),
        f"{LABEL_PREFIX}attempt": str(cmd.attempt_id),
        f"{LABEL_PREFIX}task-role": _label_value(cmd.task_role),
        f"{LABEL_PREFIX}task-index": str(cmd.index),
        f"{LABEL_PREFIX}task-attempt": str(cmd.task_attempt_id),
    }


def _port_name(label: str, i: int) -> str:
    # A port name is at most 15 characters, lowercase alphanumerics and '-', with a letter in it.
    return f"p{_dns_label(label)[:9]}-{i}"[:15].strip("-")


def pod_manifest(
    cmd: LaunchTask,
    env: dict[str, str],
    options: PodOptions,
    storage: PodStorage | None = None,
    devices: dict[str, int] | None = None,
) -> dict[str, Any]:
    """``devices``: extended resources of device plugins (an FPGA's resource name and how many)."""
    name = pod_name(cmd)
    storage = storage or PodStorage()
    resources: dict[str, str] = {}
    if cmd.cpu:
        resources["cpu"] = str(cmd.cpu)
    if cmd.memory_mb:
        resources["memory"] = f"{cmd.memory_mb}Mi"
    for resource, count in sorted((devices or {}).items()):
        resources[resource] = str(count)  # extended resources: requests equal to limits
    ports = []
    seen: set[int] = set()
    for label, numbers in sorted(cmd.ports.items()):
        for i, port in enumerate(numbers):
            if port in seen:
                continue
            seen.add(port)
            ports.append(
                {"name": _port_name(label, i), "containerPort": port, "hostPort": port, "protocol": "TCP"}
            )
    volumes: list[dict[str, Any]] = [
        {"name": "task-files", "secret": {"secretName": name, "defaultMode": 0o500, "items": [
            {"key": k, "path": k} for k in TASK_FILES
        ], "optional": False}},
    ]  # fmt: skip
    shm: dict[str, Any] = {"medium": "Memory"}
    if cmd.shm_mb:
        shm["sizeLimit"] = f"{cmd.shm_mb}Mi"
    volumes.append({"name": "dshm", "emptyDir": shm})
    volume_mounts: list[dict[str, Any]] = [
        {"name": "task-files", "mountPath": TASK_DIR, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    if cmd.has_secrets:
        items = [{"key": "secrets.yaml", "path": "secrets.yaml"}]
        volumes.append({"name": "job-secrets", "secret": {"secretName": name, "items": items}})
        volume_mounts.append({"name": "job-secrets", "mountPath": SECRETS_DIR, "readOnly": True})
    notices = notice_host_path(options, name)
    if notices is not None:
        volumes.append({"name": "notice", "hostPath": {"path": notices, "type": "DirectoryOrCreate"}})
        volume_mounts.append({"name": "notice", "mountPath": NOTICE_DIR, "readOnly": True})
    volumes += storage.volumes
    volume_mounts += storage.mounts
    container: dict[str, Any] = {
        "name": APP,
        "image": cmd.image or options.default_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/bash", "-c", BOOTSTRAP],
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "ports": ports,
        "volumeMounts": volume_mounts,
        "securityContext": {"capabilities": CAPABILITIES},
        "terminationMessagePath": "/tmp/pai-termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    spec: dict[str, Any] = {
        "nodeName": cmd.node,
        "restartPolicy": "Never",
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "terminationGracePeriodSeconds": options.grace_period_s,
        "containers": [container],
        "volumes": volumes,
    }
    if options.service_account:
        spec["serviceAccountName"] = options.service_account
    if options.scheduler_name:
        spec["schedulerName"] = options.scheduler_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": options.namespace,
            "labels": {**labels(cmd), **options.extra_labels},
            "annotations": {
                f"{LABEL_PREFIX}job-key": cmd.job_key,
                f"{LABEL_PREFIX}task-role": cmd.task_role,
            },
        },
        "spec": spec,
    }


def secret_manifest(
    cmd: LaunchTask,
    options: PodOptions,
    scripts: dict[str, str],
    job_secrets: dict[str, Any],
    owner_uid: str | None = None,
) -> dict[str, Any]:
    """The task's files (TASK_FILES) and the job's secrets.yaml, owned by its Pod so that deleting the
    Pod deletes them."""
    name = pod_name(cmd)
    unknown = set(scripts) - set(TASK_FILES)
    if unknown:
        raise ValueError(f"not files of a task: {sorted(unknown)}")
    data = {k: scripts.get(k, "") for k in TASK_FILES}
    if cmd.has_secrets:
        data["secrets.yaml"] = yaml.safe_dump(job_secrets, sort_keys=True)
    metadata: dict[str, Any] = {"name": name, "namespace": options.namespace, "labels": labels(cmd)}
    if owner_uid:
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": owner_uid, "blockOwnerDeletion": False}
        ]
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque", "stringData": data}


def storage_secret(cmd: LaunchTask, options: PodOptions, name: str, data: dict[str, str]) -> dict[str, Any]:
    """The credentials of one of the task's storages, for its volume (owned by the Pod once created)."""
    metadata: dict[str, Any] = {"name": name, "namespace": options.namespace, "labels": labels(cmd)}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque", "stringData": data}
