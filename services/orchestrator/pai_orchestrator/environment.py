"""The PAI_* environment a task gets, computed from the job and the placement of its whole gang."""

from __future__ import annotations

from pai_common.contract.types import JobSpec, Placement


def task_environment(spec: JobSpec, role: str, index: int, gang: list[Placement]) -> dict[str, str]:
    roles = [r.name for r in spec.task_roles]
    current = next(r for r in spec.task_roles if r.name == role)
    env: dict[str, str] = {
        "PAI_FRAMEWORK_NAME": spec.job_key,
        "PAI_JOB_NAME": spec.job_key,
        "PAI_USER_NAME": spec.user,
        "PAI_USERNAME": spec.user,
        "PAI_VIRTUAL_CLUSTER": spec.virtual_cluster,
        "PAI_DEFAULT_FS_URI": "",
        "PAI_TASK_ROLE_COUNT": str(len(roles)),
        "PAI_TASK_ROLE_LIST": ",".join(roles),
        "PAI_JOB_TASK_COUNT": str(sum(r.instances for r in spec.task_roles)),
        "PAI_CURRENT_TASK_ROLE_NAME": role,
        "PAI_CURRENT_TASK_ROLE_CURRENT_TASK_INDEX": str(index),
        "PAI_TASK_INDEX": str(index),
        "PAI_RESOURCE_" + role: f"{current.gpu},{current.cpu},{current.memory_mb},0",
    }
    for r in spec.task_roles:
        env[f"PAI_TASK_ROLE_TASK_COUNT_{r.name}"] = str(r.instances)
        env[f"PAI_MIN_FAILED_TASK_COUNT_{r.name}"] = str(
            r.min_failed_instances if r.min_failed_instances is not None else -1
        )
        env[f"PAI_MIN_SUCCEEDED_TASK_COUNT_{r.name}"] = str(
            r.min_succeeded_instances if r.min_succeeded_instances is not None else -1
        )
    hosts: dict[str, list[str]] = {}
    for p in sorted(gang, key=lambda p: (p.task_role, p.index)):
        env[f"PAI_HOST_IP_{p.task_role}_{p.index}"] = p.host_ip
        hosts.setdefault(p.task_role, []).append(p.host_ip)
    for role_name, ips in hosts.items():
        env[f"PAI_TASK_ROLE_{role_name}_HOST_LIST"] = ",".join(ips)
    env["PAI_TASK_ROLE_INSTANCES"] = ",".join(f"{p.task_role}:{p.index}" for p in gang)
    return env
