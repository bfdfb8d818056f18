"""The PAI_* environment a task gets, computed from the job and the placement of its whole gang.

The names and formats are OpenPAI's, so that job scripts written for OpenPAI (PyTorch DDP rendezvous,
Horovod/MPI host files, parameter servers) find their peers unchanged: the static job variables of the
rest-server, the FrameworkController identity variables, and the host/port variables OpenPAI's runtime
generates from the placed gang.
"""

from __future__ import annotations

from pai_common.contract.types import JobSpec, Placement

# The label whose first port OpenPAI calls "the" port of a task (PAI_CONTAINER_HOST_PORT, host lists).
HTTP_LABEL = "http"
SSH_LABEL = "ssh"


def _ports_list(ports: list[int]) -> str:
    return ",".join(str(p) for p in ports)


def _host_with_port(p: Placement) -> str:
    http = p.ports.get(HTTP_LABEL)
    return f"{p.host_ip}:{http[0]}" if http else p.host_ip


def static_environment(spec: JobSpec, role: str, index: int) -> dict[str, str]:
    """What every task of the job knows before anything is placed: the job, its roles, this task."""
    roles = [r.name for r in spec.task_roles]
    if role not in roles:
        raise ValueError(f"task role {role!r} is not one of {roles}")
    task_count = str(sum(r.instances for r in spec.task_roles))
    env: dict[str, str] = {
        "PAI_FRAMEWORK_NAME": spec.job_key,
        "PAI_JOB_NAME": spec.job_key,
        "PAI_USER_NAME": spec.user,
        "PAI_DEFAULT_FS_URI": "",
        "PAI_VIRTUAL_CLUSTER": spec.virtual_cluster,
        "PAI_TASK_ROLE_COUNT": str(len(roles)),
        "PAI_TASK_ROLE_LIST": ",".join(roles),
        # Older names OpenPAI still sets for scripts written against v1.
        "PAI_USERNAME": spec.user,
        "PAI_TASKS_NUM": task_count,
        "PAI_JOB_TASK_COUNT": task_count,
        "PAI_TASK_ROLES_NUM": str(len(roles)),
        "PAI_JOB_TASK_ROLE_COUNT": str(len(roles)),
        "PAI_JOB_TASK_ROLE_LIST": ",".join(roles),
        "PAI_CURRENT_TASK_ROLE_NAME": role,
        "PAI_CURRENT_TASK_ROLE_CURRENT_TASK_INDEX": str(index),
        "PAI_TASK_INDEX": str(index),
        # FrameworkController's identity of the task (the attempt ids are the runtime's to add).
        "FC_FRAMEWORK_NAME": spec.job_key,
        "FC_TASKROLE_NAME": role,
        "FC_TASK_INDEX": str(index),
    }
    for r in spec.task_roles:
        env[f"PAI_TASK_ROLE_TASK_COUNT_{r.name}"] = str(r.instances)
        env[f"PAI_RESOURCE_{r.name}"] = f"{r.gpu},{r.cpu},{r.memory_mb},{r.shm_mb}"
        # -1: the policy is disabled for this role (OpenPAI's minFailedInstances: null).
        env[f"PAI_MIN_FAILED_TASK_COUNT_{r.name}"] = str(
            r.min_failed_instances if r.min_failed_instances is not None else -1
        )
        env[f"PAI_MIN_SUCCEEDED_TASK_COUNT_{r.name}"] = str(
            r.min_succeeded_instances if r.min_succeeded_instances is not None else -1
        )
    return env


def gang_environment(role: str, index: int, gang: list[Placement]) -> dict[str, str]:
    """Where every task of the gang runs and listens, and this task's own address and ports."""
    env: dict[str, str] = {}
    ordered = sorted(gang, key=lambda p: (p.task_role, p.index))
    hosts: dict[str, list[str]] = {}
    for p in ordered:
        env[f"PAI_HOST_IP_{p.task_role}_{p.index}"] = p.host_ip
        for label, ports in sorted(p.ports.items()):
            env[f"PAI_PORT_LIST_{p.task_role}_{p.index}_{label}"] = _ports_list(ports)
            env[f"PAI_{p.task_role}_{p.index}_{label}_PORT"] = _ports_list(ports)
        hosts.setdefault(p.task_role, []).append(_host_with_port(p))
    for role_name, entries in hosts.items():
        env[f"PAI_TASK_ROLE_{role_name}_HOST_LIST"] = ",".join(entries)
    env["PAI_TASK_ROLE_INSTANCES"] = ",".join(f"{p.task_role}:{p.index}" for p in ordered)
    me = next((p for p in ordered if (p.task_role, p.index) == (role, index)), None)
    if me is None:
        return env
    env["PAI_CURRENT_CONTAINER_IP"] = me.host_ip
    env["PAI_CONTAINER_HOST_IP"] = me.host_ip
    http = me.ports.get(HTTP_LABEL)
    if http:
        env["PAI_CURRENT_CONTAINER_PORT"] = str(http[0])
        env["PAI_CONTAINER_HOST_PORT"] = str(http[0])
    ssh = me.ports.get(SSH_LABEL)
    if ssh:
        env["PAI_CONTAINER_SSH_PORT"] = str(ssh[0])
    for label, ports in sorted(me.ports.items()):
        env[f"PAI_CONTAINER_HOST_{label}_PORT_LIST"] = _ports_list(ports)
    env["PAI_CONTAINER_HOST_PORT_LIST"] = "".join(
        f"{label}:{_ports_list(ports)};" for label, ports in sorted(me.ports.items())
    )
    return env


def task_environment(spec: JobSpec, role: str, index: int, gang: list[Placement]) -> dict[str, str]:
    """Everything OpenPAI puts in a task's environment, except what only the node knows (devices)."""
    return {**static_environment(spec, role, index), **gang_environment(role, index, gang)}
