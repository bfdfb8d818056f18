"""OpenPAI's Kubernetes node and pod lists, read back by Kubernetes' official client (its models enforce
required fields and types)."""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client import ApiClient

from pai_gateway import k8s_views


def _read(kind: str, body: dict[str, Any]) -> Any:
    return ApiClient().deserialize(json.dumps(body), kind, "application/json")


NODES = [
    {
        "name": "node-0",
        "registered": True,
        "configured": True,
        "host_ip": "10.0.0.1",
        "cpu": 32,
        "memory_mb": 262144,
        "gpus": [
            {"index": 0, "model": "NVIDIA A100", "memory_mb": 81920, "healthy": True},
            {"index": 1, "model": "NVIDIA A100", "memory_mb": 81920, "healthy": False},
        ],
        "simulated": False,
        "healthy": True,
        "bad_gpus": [1],
    },
    {
        "name": "node-1",
        "registered": False,
        "configured": True,
        "host_ip": "",
        "cpu": 0,
        "memory_mb": 0,
        "gpus": [],
        "simulated": False,
        "healthy": False,
        "bad_gpus": [],
    },
]


def test_nodes_as_a_node_list() -> None:
    body = k8s_views.node_list(NODES)
    parsed = _read("V1NodeList", body)
    ready, lost = parsed.items
    assert ready.metadata.name == "node-0" and ready.metadata.labels["kubernetes.io/hostname"] == "node-0"
    assert ready.status.capacity == {"cpu": "32", "memory": "262144Mi", "pods": "110", "nvidia.com/gpu": "2"}
    # An unhealthy GPU is not allocatable, as the device plugin reports it.
    assert ready.status.allocatable["nvidia.com/gpu"] == "1"
    assert [(a.type, a.address) for a in ready.status.addresses] == [
        ("InternalIP", "10.0.0.1"),
        ("Hostname", "node-0"),
    ]
    assert [(c.type, c.status) for c in ready.status.conditions] == [("Ready", "True")]
    # Which GPUs are bad, for the portal's node list (absent where none is).
    assert ready.metadata.annotations[k8s_views.BAD_GPUS_ANNOTATION] == "1"
    assert k8s_views.BAD_GPUS_ANNOTATION not in lost.metadata.annotations
    assert k8s_views.BAD_GPUS_ANNOTATION == "pai.platform/bad-gpus"  # the name the portal reads
    # A configured node whose agent never registered: not ready, and says why.
    (condition,) = lost.status.conditions
    assert (condition.status, condition.reason) == ("Unknown", "NodeStatusUnknown")
    assert "not registered" in condition.message
    assert "nvidia.com/gpu" not in lost.status.capacity
    assert ready.spec.unschedulable is False


def test_a_cordoned_node_is_unschedulable_and_still_ready() -> None:
    cordoned = {
        **NODES[0],
        "schedulable": False,
        "cordon": {"by": "root", "at": 1, "reason": "", "drain": False},
    }
    (node,) = _read("V1NodeList", k8s_views.node_list([cordoned])).items
    assert node.spec.unschedulable is True
    assert [(c.type, c.status) for c in node.status.conditions] == [("Ready", "True")]


TASK = {
    "job_key": "alice~train",
    "user": "alice",
    "job_name": "train",
    "virtual_cluster": "default",
    "debug_id": "0123456789abcdef0123456789abcdef",
    "job_attempt_id": 0,
    "task_role": "Main_Role",
    "index": 3,
    "task_uid": "fedcba",
    "state": "TaskAttemptRunning",
    "attempt_id": 1,
    "node": "node-0",
    "host_ip": "10.0.0.1",
    "gpus": [0, 2],
    "gpu": 2,
    "cpu": 4,
    "memory_mb": 8192,
    "image": "python:3.11",
    "created_at": 1_700_000_000_000,
    "launched_at": 1_700_000_001_000,
    "exit_code": None,
}


def test_tasks_as_a_pod_list() -> None:
    waiting = {
        **TASK,
        "index": 4,
        "state": "TaskAttemptCreationPending",
        "node": None,
        "host_ip": None,
        "gpus": [],
    }
    done = {**TASK, "index": 5, "state": "TaskAttemptCompleted", "exit_code": 1}
    parsed = _read("V1PodList", k8s_views.pod_list([TASK, waiting, done]))
    running, pending, failed = parsed.items
    # A DNS-1123 pod name, and OpenPAI's labels and HiveD's GPU annotation.
    assert running.metadata.name == "0123456789abcdef0123456789abcdef-main-role-3"
    assert running.metadata.labels["userName"] == "alice" and running.metadata.labels["FC_TASK_INDEX"] == "3"
    assert running.metadata.annotations[k8s_views.ISOLATION_ANNOTATION] == "0,2"
    assert running.spec.node_name == "node-0" and running.status.phase == "Running"
    assert running.spec.containers[0].resources.limits == {
        "cpu": "4",
        "memory": "8192Mi",
        "nvidia.com/gpu": "2",
    }
    assert pending.status.phase == "Pending" and pending.spec.node_name is None
    assert failed.status.phase == "Failed"
    assert k8s_views.pod_list([TASK], "kube-system")["items"] == []
