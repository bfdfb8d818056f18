"""Ports in the PAI_* environment, and their assignment to a placed gang."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pai_common.contract.types import JobSpec, Placement, TaskRoleSpec
from pai_orchestrator.environment import task_environment
from pai_orchestrator.ports import ALWAYS, PORT_RANGE, assign_ports


def _spec(roles: dict[str, tuple[int, dict[str, int]]]) -> JobSpec:
    return JobSpec(
        job_key="bob~ddp",
        user="bob",
        name="ddp",
        task_roles=[
            TaskRoleSpec(
                name=name, instances=n, gpu=1, cpu=4, memory_mb=8192, shm_mb=1024, entrypoint="x", ports=ports
            )
            for name, (n, ports) in roles.items()
        ],
        submitted_at=1,
    )


def _gang(spec: JobSpec, nodes: int = 2) -> list[Placement]:
    out = []
    k = 0
    for r in spec.task_roles:
        for i in range(r.instances):
            node = k % nodes
            out.append(
                Placement(task_role=r.name, index=i, node=f"n{node}", gpus=[0], host_ip=f"10.0.0.{node}")
            )
            k += 1
    return out


def test_a_three_role_job_sees_every_peers_address_and_ports() -> None:
    spec = _spec({"master": (1, {"nccl": 2}), "worker": (2, {}), "ps": (1, {"grpc": 1})})
    gang = assign_ports("bob~ddp", 0, spec, _gang(spec))
    by_task = {(p.task_role, p.index): p for p in gang}
    env = task_environment(spec, "worker", 1, gang)
    for (role, i), p in by_task.items():
        assert env[f"PAI_HOST_IP_{role}_{i}"] == p.host_ip
        for label, ports in p.ports.items():
            assert env[f"PAI_PORT_LIST_{role}_{i}_{label}"] == ",".join(map(str, ports))
            assert env[f"PAI_{role}_{i}_{label}_PORT"] == ",".join(map(str, ports))
    master = by_task[("master", 0)]
    assert len(master.ports["nccl"]) == 2
    assert set(master.ports) == {"nccl", "ssh", "http"}
    assert set(by_task[("ps", 0)].ports) == {"grpc", "ssh", "http"}
    # Host lists: "<ip>:<first http port>" in index order.
    workers = [by_task[("worker", i)] for i in range(2)]
    assert env["PAI_TASK_ROLE_worker_HOST_LIST"] == ",".join(
        f"{w.host_ip}:{w.ports['http'][0]}" for w in workers
    )
    me = workers[1]
    assert env["PAI_CONTAINER_HOST_IP"] == env["PAI_CURRENT_CONTAINER_IP"] == me.host_ip
    assert env["PAI_CONTAINER_HOST_PORT"] == env["PAI_CURRENT_CONTAINER_PORT"] == str(me.ports["http"][0])
    assert env["PAI_CONTAINER_SSH_PORT"] == str(me.ports["ssh"][0])
    assert env["PAI_CONTAINER_HOST_ssh_PORT_LIST"] == str(me.ports["ssh"][0])
    assert env["PAI_CONTAINER_HOST_PORT_LIST"] == f"http:{me.ports['http'][0]};ssh:{me.ports['ssh'][0]};"
    assert env["PAI_TASK_ROLE_INSTANCES"] == "master:0,ps:0,worker:0,worker:1"


def test_a_request_for_more_http_ports_replaces_the_default_one() -> None:
    spec = _spec({"a": (1, {"http": 3})})
    (p,) = assign_ports("bob~ddp", 0, spec, _gang(spec))
    assert len(p.ports["http"]) == 3
    assert len(p.ports["ssh"]) == 1


def test_the_same_gang_gets_the_same_ports_and_a_new_attempt_others() -> None:
    spec = _spec({"a": (3, {"x": 2})})
    gang = _gang(spec)
    first = assign_ports("bob~ddp", 0, spec, gang)
    assert assign_ports("bob~ddp", 0, spec, list(reversed(gang))) == first
    retry = assign_ports("bob~ddp", 1, spec, gang)
    assert [p.ports for p in retry] != [p.ports for p in first]


def test_an_unknown_role_is_refused() -> None:
    spec = _spec({"a": (1, {})})
    with pytest.raises(ValueError, match="not one of"):
        task_environment(spec, "b", 0, [])


@settings(max_examples=60, deadline=None)
@given(
    roles=st.dictionaries(
        st.from_regex(r"[a-z]{1,4}", fullmatch=True),
        st.tuples(
            st.integers(1, 6),
            st.dictionaries(st.sampled_from(["http", "ssh", "a", "b"]), st.integers(1, 40), max_size=3),
        ),
        min_size=1,
        max_size=3,
    ),
    nodes=st.integers(1, 3),
    attempt=st.integers(0, 5),
)
def test_no_port_is_given_twice_on_a_host(
    roles: dict[str, tuple[int, dict[str, int]]], nodes: int, attempt: int
) -> None:
    spec = _spec(roles)
    gang = assign_ports("bob~ddp", attempt, spec, _gang(spec, nodes))
    low, high = PORT_RANGE
    per_host: dict[str, list[int]] = {}
    for p in gang:
        wanted = {**ALWAYS, **roles[p.task_role][1]}
        assert {k: len(v) for k, v in p.ports.items()} == wanted
        for ports in p.ports.values():
            per_host.setdefault(p.host_ip, []).extend(ports)
    for ports in per_host.values():
        assert len(ports) == len(set(ports))
        assert all(low <= q < high for q in ports)
