"""OpenPAI's `/api/v2/kubernetes/nodes` and `/kubernetes/pods`, built from this platform's own state (pure).

OpenPAI passes Kubernetes' NodeList and PodList through; its web portal and other tools read the node
names, addresses, capacity (`cpu`, `memory`, `nvidia.com/gpu`), the Ready condition, and each pod's node,
phase, labels (user, job, task role, index) and GPU isolation annotation. Here every node of the cluster is
a Node and every task of a job that has not finished is a Pod, in the `default` namespace, with the
labels and annotation OpenPAI's own pods carry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

NAMESPACE: Final = "default"
GPU_RESOURCE: Final = "nvidia.com/gpu"
# HiveD's annotation with the GPU indexes a pod may use (OpenPAI's containerGpus is read from it).
ISOLATION_ANNOTATION: Final = "hivedscheduler.microsoft.com/pod-leaf-cell-isolation"
# The indexes of a node's GPUs the health checks found bad (comma-separated; absent when none).
BAD_GPUS_ANNOTATION: Final = "pai.platform/bad-gpus"

# FrameworkController task states, as Kubernetes pod phases.
_PENDING = frozenset({"TaskAttemptCreationPending", "TaskAttemptCreationRequested", "TaskAttemptPreparing"})
_RUNNING = "TaskAttemptRunning"


def _timestamp(epoch_ms: int | None) -> str | None:
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _resources(cpu: int, memory_mb: int, gpus: int) -> dict[str, str]:
    out = {"cpu": str(cpu), "memory": f"{memory_mb}Mi", "pods": "110"}
    if gpus:
        out[GPU_RESOURCE] = str(gpus)
    return out


def _ready(record: Mapping[str, Any]) -> dict[str, Any]:
    if record["healthy"]:
        return {
            "type": "Ready",
            "status": "True",
            "reason": "AgentReady",
            "message": "the node's runtime agent is registered and sends heartbeats",
        }
    if not record["registered"]:
        why = "its runtime agent has not registered"
    elif not record["configured"]:
        why = "the cluster config does not name it, so nothing is placed there"
    else:
        why = "its runtime agent stopped sending heartbeats"
    return {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": why}


def node(record: Mapping[str, Any]) -> dict[str, Any]:
    """One Kubernetes Node from a scheduler node record (ListNodesRequest)."""
    name = record["name"]
    gpus = record.get("gpus", [])
    healthy_gpus = sum(1 for g in gpus if g.get("healthy"))
    addresses = [{"type": "Hostname", "address": name}]
    if record.get("host_ip"):
        addresses.insert(0, {"type": "InternalIP", "address": record["host_ip"]})
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "pai-worker": "true"}
    models = sorted({g["model"] for g in gpus if g.get("model")})
    if models:
        labels["nvidia.com/gpu.product"] = models[0].replace(" ", "-")
    annotations = {"pai.platform/simulated": str(bool(record.get("simulated"))).lower()}
    bad = sorted({*record.get("bad_gpus", []), *(g["index"] for g in gpus if not g.get("healthy", True))})
    if bad:
        # Kubernetes has no field for it (the device plugin only lowers allocatable): said here.
        annotations[BAD_GPUS_ANNOTATION] = ",".join(str(i) for i in bad)
    return {
        "metadata": {
            "name": name,
            "uid": name,
            "labels": labels,
            "annotations": annotations,
        },
        # A cordoned node (PUT /api/v2/cluster/nodes/{node}) is what `kubectl cordon` makes of one.
        "spec": {"unschedulable": not record.get("schedulable", True)},
        "status": {
            "capacity": _resources(record.get("cpu", 0), record.get("memory_mb", 0), len(gpus)),
            "allocatable": _resources(record.get("cpu", 0), record.get("memory_mb", 0), healthy_gpus),
            "addresses": addresses,
            "conditions": [_ready(record)],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "",
                "containerRuntimeVersion": "",
                "kernelVersion": "",
                "osImage": "",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }


def node_list(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": [node(r) for r in records]}


def _phase(state: str, exit_code: int | None) -> str:
    if state in _PENDING:
        return "Pending"
    if state == _RUNNING:
        return "Running"
    if exit_code is None:
        return "Running"  # being stopped; the exit is not known yet
    return "Succeeded" if exit_code == 0 else "Failed"


def pod(task: Mapping[str, Any]) -> dict[str, Any]:
    """One Kubernetes Pod from a jobs-service task record (ListLiveTasksRequest)."""
    role, index = task["task_role"], task["index"]
    name = f"{task['debug_id']}-{role.lower().replace('_', '-')}-{index}"
    phase = _phase(task["state"], task.get("exit_code"))
    annotations: dict[str, str] = {}
    if task.get("gpus"):
        annotations[ISOLATION_ANNOTATION] = ",".join(str(g) for g in task["gpus"])
    limits = _resources(task.get("cpu", 0), task.get("memory_mb", 0), task.get("gpu", 0))
    limits.pop("pods")
    status: dict[str, Any] = {"phase": phase}
    if task.get("node"):
        status["hostIP"] = task.get("host_ip") or ""
        status["podIP"] = task.get("host_ip") or ""
        status["conditions"] = [{"type": "PodScheduled", "status": "True"}]
    else:
        status["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "waiting"}
        ]
    if task.get("launched_at") is not None:
        status["startTime"] = _timestamp(task["launched_at"])
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": role,
                "image": task.get("image") or "",
                "resources": {"limits": limits, "requests": dict(limits)},
            }
        ],
        "restartPolicy": "Never",
        "hostNetwork": True,
    }
    if task.get("node"):
        spec["nodeName"] = task["node"]
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "uid": task["task_uid"],
        "labels": {
            "type": "kube-launcher-task",
            "userName": task["user"],
            "jobName": task["job_name"],
            "virtualCluster": task["virtual_cluster"],
            "FC_FRAMEWORK_NAME": task["debug_id"],
            "FC_TASKROLE_NAME": role,
            "FC_TASK_INDEX": str(index),
            "FC_TASK_ATTEMPT_ID": str(task.get("attempt_id", 0)),
        },
        "annotations": annotations,
    }
    if task.get("created_at") is not None:
        metadata["creationTimestamp"] = _timestamp(task["created_at"])
    return {"metadata": metadata, "spec": spec, "status": status}


def pod_list(tasks: Sequence[Mapping[str, Any]], namespace: str | None = None) -> dict[str, Any]:
    """Every task as a pod; only the `default` namespace has any (`namespace` filters as Kubernetes)."""
    items = [pod(t) for t in tasks] if namespace in (None, "", NAMESPACE) else []
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
