"""Attempts as gangs of the core: one gang, or (gangAllocation false) one per pod with keys naming the task;
pending reasons folded per attempt; the VC's cap on preemption notice. The service's part (a job of more
pods than the cluster holds runs pod by pod) is in test_service.py."""

from __future__ import annotations

import pytest
import yaml

from pai_common.contract.events import SchedulingRequested
from pai_common.contract.types import PodRequest
from pai_scheduler.hived.allocator import HivedAllocator
from pai_scheduler.hived.config import ConfigError, parse_hived_config
from pai_scheduler.hived.decisions import Preempting
from pai_scheduler.hived.requests import GangRequest, Member
from pai_scheduler.job_gangs import (
    alloc_key,
    parse_key,
    pending_by_attempt,
    pod_key,
    pods_of_attempt,
    requests_of,
)


def request(n: int, gang: bool, gpu: int = 1, roles: tuple[str, ...] = ("w",)) -> SchedulingRequested:
    return SchedulingRequested(
        job_key="u~many",
        attempt_id=2,
        virtual_cluster="research",
        priority=10,
        gang_allocation=gang,
        pods=[
            PodRequest(task_role=role, index=i, gpu=gpu, cpu=1, memory_mb=1024)
            for role in roles
            for i in range(n)
        ],
    )


def test_keys_name_the_attempt_and_the_task() -> None:
    assert alloc_key("u~j", 3) == "u~j#3" and pod_key("u~j", 3, "w", 7) == "u~j#3:w:7"
    whole, pod = parse_key("u~j#3"), parse_key("u~j#3:w:7")
    assert (whole.job_key, whole.attempt_id, whole.task_role) == ("u~j", 3, None)
    assert (pod.attempt, pod.task_role, pod.index) == ("u~j#3", "w", 7)
    keys = ["u~j#3", "u~j#3:w:0", "u~j#30:w:0", "u~j#3:w:1", "v~j#3:w:0"]
    assert pods_of_attempt(keys, "u~j", 3) == ["u~j#3:w:0", "u~j#3:w:1"]


def test_an_attempt_is_one_gang_or_one_per_pod() -> None:
    [whole] = requests_of(request(3, gang=True))
    assert whole.key == "u~many#2" and [(m.role, m.pods) for m in whole.members] == [("w", 3)]
    pods = requests_of(request(2, gang=False, roles=("m", "w")))
    assert [r.key for r in pods] == ["u~many#2:m:0", "u~many#2:m:1", "u~many#2:w:0", "u~many#2:w:1"]
    assert all(len(r.members) == 1 and r.members[0].pods == 1 for r in pods)


def test_pending_reasons_fold_per_attempt() -> None:
    folded = pending_by_attempt(
        {
            "a~x#0": ["VC busy", 1],
            "u~j#0:w:3": ["no room", 5],
            "u~j#0:w:2": ["no room", 4],
            "u~j#0:w:9": ["preempting", None],
        }
    )
    assert folded["a~x#0"] == ["VC busy", 1]
    reason, position = folded["u~j#0"]
    assert position == 4 and reason.endswith("no room")
    assert reason.startswith("some of its tasks wait to be placed")
    # One task fewer waiting changes nothing to publish: a job of 500 tasks is not 500 pending events.
    fewer = pending_by_attempt({"u~j#0:w:2": ["no room", 4], "u~j#0:w:9": ["preempting", None]})
    assert fewer["u~j#0"] == folded["u~j#0"]


CAPS = """
sharing: {preemptionGraceSeconds: 120}
physicalCluster:
  skuTypes: {A100: {gpu: 1, cpu: 8, memory: 64Gi}}
  cellTypes: {A100-NODE: {childCellType: A100, childCellNumber: 4, isNodeLevel: true}}
  physicalCells: [{cellType: A100-NODE, cellAddress: a0}]
virtualClusters:
  fast: {virtualCells: [{cellType: A100-NODE, cellNumber: 1}], preemptionGraceSeconds: 15}
"""


def test_a_vc_caps_the_notice_of_its_preempted_jobs() -> None:
    config = parse_hived_config(yaml.safe_load(CAPS))
    assert config.preemption_grace_s == 120.0
    assert {v.name: v.preemption_grace_s for v in config.virtual_clusters} == {"fast": 15.0}
    alloc = HivedAllocator(config)
    low = GangRequest("u~low#0", "fast", 10, (Member("w", 1, 4),))
    alloc.submit(low)
    decision = alloc.submit(GangRequest("u~high#0", "fast", 100, (Member("w", 1, 4),)))
    assert isinstance(decision, Preempting) and decision.victims == ("u~low#0",)
    assert alloc.grace_cap("u~low#0") == 15.0
    assert alloc.grace_cap("nobody#0") == 120.0  # unknown gangs get the cluster's cap
    bad = CAPS.replace("preemptionGraceSeconds: 15", "preemptionGraceSeconds: -1")
    with pytest.raises(ConfigError, match=r"virtualClusters\.fast\.preemptionGraceSeconds must be >= 0"):
        parse_hived_config(yaml.safe_load(bad))
