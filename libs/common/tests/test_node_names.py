"""Node names: Kubernetes node names (DNS-1123 subdomains, with dots) are node names everywhere the
contract carries one, and travel in NATS subjects and durable names as one token."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pai_common.contract.base import (
    command_subject,
    heartbeat_subject,
    name_of_token,
    rpc_subject,
    subject_token,
    valid_node_name,
)
from pai_common.contract.commands import KillTask, LaunchTask
from pai_common.contract.events import NodeRegistered
from pai_common.contract.types import Placement

EKS = "ip-10-0-0-1.ec2.internal"


@pytest.mark.parametrize("name", [EKS, "node-0", "gpu_box_3", "a.b.c", "N1", "x" * 253])
def test_node_names(name: str) -> None:
    assert valid_node_name(name)
    assert LaunchTask(job_key="u~j", attempt_id=0, task_role="r", index=0, node=name, gpus=[], entrypoint="")
    assert KillTask(job_key="u~j", attempt_id=0, task_role="r", index=0, node=name, reason="x")
    assert Placement(task_role="r", index=0, node=name, gpus=[])
    assert NodeRegistered(node=name, host_ip="h", cpu=1, memory_mb=1, gpus=[], simulated=True)


@pytest.mark.parametrize("name", ["", "a..b", ".a", "a.", "a b", "a/b", "a*", "a>", "a~b", "x" * 254])
def test_what_is_no_node_name(name: str) -> None:
    assert not valid_node_name(name)
    with pytest.raises(ValidationError, match="node"):
        LaunchTask(job_key="u~j", attempt_id=0, task_role="r", index=0, node=name, gpus=[], entrypoint="")


def test_a_dotted_name_is_one_subject_token_and_comes_back() -> None:
    token = subject_token(EKS)
    assert "." not in token and name_of_token(token) == EKS
    assert command_subject("runtime.launch", EKS) == f"pai.cmd.runtime.{token}.launch"
    assert rpc_subject("runtime", "logs", EKS) == f"pai.rpc.runtime.{token}.logs"
    assert heartbeat_subject(EKS) == f"pai.hb.{token}"
    # A node named like the first label of another is another node: its subjects never overlap.
    assert command_subject("runtime.launch", "ip-10-0-0-1").split(".")[3] != token
