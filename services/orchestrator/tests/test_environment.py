"""The PAI_* environment of a task, computed from the job and its whole gang's placement."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pai_common.contract.types import JobSpec, Placement, TaskRoleSpec
from pai_orchestrator.environment import task_environment


def _role(name: str, instances: int, **kw: object) -> TaskRoleSpec:
    base: dict[str, object] = {"gpu": 2, "cpu": 8, "memory_mb": 16384, "entrypoint": "python train.py"}
    base.update(kw)
    return TaskRoleSpec(name=name, instances=instances, **base)


def _spec(*roles: TaskRoleSpec) -> JobSpec:
    return JobSpec(
        job_key="alice~mnist",
        user="alice",
        name="mnist",
        virtual_cluster="research",
        task_roles=list(roles),
        submitted_at=1,
    )


def _gang(spec: JobSpec) -> list[Placement]:
    return [
        Placement(
            task_role=r.name, index=i, node=f"n-{r.name}-{i}", gpus=[i], host_ip=f"10.{len(r.name)}.0.{i}"
        )
        for r in spec.task_roles
        for i in range(r.instances)
    ]


def test_environment_of_a_ps_worker_job() -> None:
    spec = _spec(
        _role("ps", 1, gpu=0, cpu=2, memory_mb=4096, min_failed_instances=None),
        _role("worker", 3, min_failed_instances=2, min_succeeded_instances=3),
    )
    gang = _gang(spec)
    random.Random(7).shuffle(gang)  # the order the scheduler answers in does not matter
    env = task_environment(spec, "worker", 2, gang)

    expected = {
        "PAI_FRAMEWORK_NAME": "alice~mnist",
        "PAI_JOB_NAME": "alice~mnist",
        "PAI_USER_NAME": "alice",
        "PAI_USERNAME": "alice",
        "PAI_VIRTUAL_CLUSTER": "research",
        "PAI_TASK_ROLE_COUNT": "2",
        "PAI_TASK_ROLE_LIST": "ps,worker",
        "PAI_JOB_TASK_COUNT": "4",
        "PAI_CURRENT_TASK_ROLE_NAME": "worker",
        "PAI_CURRENT_TASK_ROLE_CURRENT_TASK_INDEX": "2",
        "PAI_TASK_INDEX": "2",
        "PAI_RESOURCE_worker": "2,8,16384,512",
        "PAI_RESOURCE_ps": "0,2,4096,512",
        "PAI_TASKS_NUM": "4",
        "PAI_TASK_ROLES_NUM": "2",
        "PAI_JOB_TASK_ROLE_COUNT": "2",
        "PAI_JOB_TASK_ROLE_LIST": "ps,worker",
        "PAI_DEFAULT_FS_URI": "",
        "FC_FRAMEWORK_NAME": "alice~mnist",
        "FC_TASKROLE_NAME": "worker",
        "FC_TASK_INDEX": "2",
        "PAI_CURRENT_CONTAINER_IP": "10.6.0.2",
        "PAI_CONTAINER_HOST_IP": "10.6.0.2",
        "PAI_TASK_ROLE_TASK_COUNT_ps": "1",
        "PAI_TASK_ROLE_TASK_COUNT_worker": "3",
        "PAI_MIN_FAILED_TASK_COUNT_ps": "-1",  # disabled
        "PAI_MIN_FAILED_TASK_COUNT_worker": "2",
        "PAI_MIN_SUCCEEDED_TASK_COUNT_ps": "-1",  # disabled
        "PAI_MIN_SUCCEEDED_TASK_COUNT_worker": "3",
        "PAI_HOST_IP_ps_0": "10.2.0.0",
        "PAI_HOST_IP_worker_0": "10.6.0.0",
        "PAI_HOST_IP_worker_1": "10.6.0.1",
        "PAI_HOST_IP_worker_2": "10.6.0.2",
        # Host lists are in task index order, whatever the placement order.
        "PAI_TASK_ROLE_ps_HOST_LIST": "10.2.0.0",
        "PAI_TASK_ROLE_worker_HOST_LIST": "10.6.0.0,10.6.0.1,10.6.0.2",
    }
    for name, value in expected.items():
        assert env[name] == value, name
    # No ports were assigned: no port variables, and host lists carry bare addresses.
    assert [k for k in env if "PORT" in k] == ["PAI_CONTAINER_HOST_PORT_LIST"]
    assert env["PAI_CONTAINER_HOST_PORT_LIST"] == ""
    assert sorted(env["PAI_TASK_ROLE_INSTANCES"].split(",")) == ["ps:0", "worker:0", "worker:1", "worker:2"]


def test_the_current_role_and_index_change_nothing_but_themselves() -> None:
    spec = _spec(_role("ps", 1), _role("worker", 2))
    gang = _gang(spec)
    a = task_environment(spec, "worker", 0, gang)
    b = task_environment(spec, "ps", 0, gang)
    differing = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert differing == {
        "PAI_CURRENT_TASK_ROLE_NAME",
        "FC_TASKROLE_NAME",
        "PAI_CURRENT_CONTAINER_IP",
        "PAI_CONTAINER_HOST_IP",
    }
    c = task_environment(spec, "worker", 1, gang)
    assert {k for k in a if a[k] != c.get(k)} == {
        "PAI_CURRENT_TASK_ROLE_CURRENT_TASK_INDEX",
        "PAI_TASK_INDEX",
        "FC_TASK_INDEX",
        "PAI_CURRENT_CONTAINER_IP",
        "PAI_CONTAINER_HOST_IP",
    }


@st.composite
def jobs(draw: st.DrawFn) -> tuple[JobSpec, list[Placement], str, int]:
    names = draw(
        st.lists(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), min_size=1, max_size=3, unique=True)
    )
    roles = [
        _role(
            n,
            draw(st.integers(1, 4)),
            min_failed_instances=draw(st.one_of(st.none(), st.integers(1, 4))),
            min_succeeded_instances=draw(st.one_of(st.none(), st.integers(1, 4))),
        )
        for n in names
    ]
    spec = _spec(*roles)
    gang = draw(st.permutations(_gang(spec)))
    current = draw(st.sampled_from(roles))
    return spec, list(gang), current.name, draw(st.integers(0, current.instances - 1))


@settings(max_examples=100, deadline=None)
@given(jobs())
def test_every_task_sees_the_whole_gang(job: tuple[JobSpec, list[Placement], str, int]) -> None:
    spec, gang, role, index = job
    env = task_environment(spec, role, index, gang)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    for p in gang:
        assert env[f"PAI_HOST_IP_{p.task_role}_{p.index}"] == p.host_ip
    for r in spec.task_roles:
        hosts = env[f"PAI_TASK_ROLE_{r.name}_HOST_LIST"].split(",")
        assert hosts == [f"10.{len(r.name)}.0.{i}" for i in range(r.instances)]
        assert env[f"PAI_TASK_ROLE_TASK_COUNT_{r.name}"] == str(r.instances)
        min_failed = r.min_failed_instances if r.min_failed_instances is not None else -1
        assert env[f"PAI_MIN_FAILED_TASK_COUNT_{r.name}"] == str(min_failed)
    assert env["PAI_JOB_TASK_COUNT"] == str(len(gang))
    assert env["PAI_TASK_ROLE_LIST"].split(",") == [r.name for r in spec.task_roles]
    assert (env["PAI_CURRENT_TASK_ROLE_NAME"], env["PAI_TASK_INDEX"]) == (role, str(index))
