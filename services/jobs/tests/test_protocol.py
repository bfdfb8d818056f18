"""Tests of protocol v2 parsing, checking and rendering (pai_jobs.protocol)."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pai_common.contract.types import JobSpec
from pai_common.errors import InvalidProtocolError, PayloadTooLargeError
from pai_common.reference import reference_files
from pai_jobs.protocol import (
    MAX_BODY_BYTES,
    MAX_NODES,
    MAX_TASKS,
    ROOT_FIELD,
    SECRET_MASK,
    ParsedJob,
    parse_job,
)

DATA_DIR = Path(__file__).parent / "data"
# OpenPAI's own examples, beside the repository in a development checkout: parsed in addition.
REFERENCE_EXAMPLES = reference_files("openpai/examples", "*.yaml", "OpenPAI's examples parse into job specs")
NOW = 1_700_000_000_000


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.yaml")) if directory.is_dir() else []


def _parse(doc: dict[str, Any] | str, username: str = "alice") -> ParsedJob:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)
    return parse_job(text, username, NOW)


def _problems(doc: dict[str, Any] | str) -> list[dict[str, str]]:
    with pytest.raises(InvalidProtocolError) as caught:
        _parse(doc)
    problems = json.loads(caught.value.message)
    assert isinstance(problems, list) and problems
    for problem in problems:
        assert set(problem) == {"field", "message"}
        assert isinstance(problem["field"], str) and isinstance(problem["message"], str)
        assert problem["message"]
    return problems


def _fields(doc: dict[str, Any] | str) -> list[str]:
    return [problem["field"] for problem in _problems(doc)]


# A valid job that uses every feature the checks look at; each invalid variant below breaks one thing.
BASE: dict[str, Any] = {
    "protocolVersion": 2,
    "name": "cifar10_ps_worker",
    "type": "job",
    "jobRetryCount": 1,
    "prerequisites": [
        {"type": "dockerimage", "name": "image", "uri": "example/tensorflow:1.15"},
        {"type": "script", "name": "bench", "uri": "github.com/example/benchmarks", "version": "abc123"},
        {
            "type": "data",
            "name": "cifar10",
            "uri": ["https://data.example/cifar10.tgz", "https://mirror/c.tgz"],
        },
        {"type": "output", "name": "model", "uri": "hdfs://storage/model"},
    ],
    "parameters": {"model": "resnet20", "batch": 32, "opt": {"lr": 0.5, "steps": 1.0}, "flags": ["a", "b"]},
    "secrets": {"token": "s3cr3t", "nested": {"password": "hunter2"}},
    "taskRoles": {
        "worker": {
            "instances": 2,
            "completion": {"minFailedInstances": 1, "minSucceededInstances": -1},
            "taskRetryCount": 2,
            "dockerImage": "image",
            "script": "bench",
            "data": "cifar10",
            "output": "model",
            "resourcePerInstance": {"cpu": 4, "memoryMB": 8192, "gpu": 2, "ports": {"ssh": 1}},
            "commands": ["python train.py --model=<% $parameters.model %>", "echo done"],
        },
        "ps": {
            "dockerImage": "image",
            "resourcePerInstance": {"cpu": 2, "memoryMB": 4096},
            "commands": ["python ps.py"],
        },
    },
    "deployments": [
        {
            "name": "prod",
            "taskRoles": {
                "worker": {
                    "preCommands": ["wget <% $data.uri[0] %>"],
                    "postCommands": ["upload <% $output %>"],
                }
            },
        },
        {"name": "dev", "taskRoles": {"ps": {"preCommands": ["echo dev"]}}},
    ],
    "defaults": {"virtualCluster": "research", "deployment": "prod"},
    "extras": {"hivedScheduler": {"jobPriorityClass": "prod"}, "gangAllocation": False},
}


def _variant(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    mutate(doc)
    return doc


def _role(doc: dict[str, Any], name: str = "worker") -> dict[str, Any]:
    role = doc["taskRoles"][name]
    assert isinstance(role, dict)
    return role


# ---- valid jobs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    _yaml_files(DATA_DIR) + REFERENCE_EXAMPLES,
    ids=lambda path: f"{path.parent.name}/{path.name}",
)
def test_example_parses_into_a_job_spec(path: Path) -> None:
    text = path.read_text()
    source = yaml.safe_load(text)
    parsed = parse_job(text, "alice", NOW)

    assert isinstance(parsed.spec, JobSpec)
    assert parsed.spec.job_key == f"alice~{source['name']}"
    assert parsed.spec.user == "alice"
    assert parsed.spec.submitted_at == NOW
    assert [role.name for role in parsed.spec.task_roles] == list(source["taskRoles"])
    for role in parsed.spec.task_roles:
        role_source = source["taskRoles"][role.name]
        assert role.instances == role_source.get("instances", 1)
        assert role.gpu == role_source["resourcePerInstance"].get("gpu", 0)
        assert role.memory_mb == role_source["resourcePerInstance"]["memoryMB"]
        # The examples have no deployments and no placeholders: the entrypoint is the commands.
        assert role.entrypoint == "\n".join(command.strip() for command in role_source["commands"])
    assert parsed.raw == source
    # The spec survives the message contract's own validation.
    assert JobSpec.model_validate(parsed.spec.model_dump()) == parsed.spec


def test_the_copied_examples_are_all_present() -> None:
    names = {path.name for path in _yaml_files(DATA_DIR)}
    assert names == {
        "hello-world-job.yaml",
        "Distributed-example_cifar10-single-mul-DDP-nccl.yaml",
        "mnist_500_tasks_CPU_500Task_MNIST.yaml",
    }


def test_hello_world_fields() -> None:
    spec = parse_job((DATA_DIR / "hello-world-job.yaml").read_text(), "bob", 42).spec
    assert spec.job_key == "bob~hello-world-job"
    assert spec.name == "hello-world-job"
    assert spec.virtual_cluster == "default"
    assert spec.priority == 10
    assert spec.job_retry_count == 0
    (role,) = spec.task_roles
    assert (role.name, role.instances, role.gpu, role.cpu, role.memory_mb) == ("taskrole", 1, 1, 1, 6500)
    assert role.min_failed_instances == 1
    assert role.min_succeeded_instances is None  # -1 disables it
    assert role.entrypoint.splitlines()[0] == "git clone https://github.com/tensorflow/models"
    assert "--max_number_of_steps=1000" in role.entrypoint.splitlines()[-1]


def test_distributed_example_defaults_min_succeeded_to_instances() -> None:
    spec = parse_job(
        (DATA_DIR / "Distributed-example_cifar10-single-mul-DDP-nccl.yaml").read_text(), "u", 1
    ).spec
    (role,) = spec.task_roles
    assert (role.name, role.instances, role.gpu, role.cpu) == ("worker", 2, 2, 8)
    # minSucceededInstances is absent: OpenPAI uses the instance count.
    assert role.min_succeeded_instances == 2
    assert role.min_failed_instances == 1


def test_multi_role_example() -> None:
    spec = parse_job((DATA_DIR / "mnist_500_tasks_CPU_500Task_MNIST.yaml").read_text(), "u", 1).spec
    roles = {role.name: role for role in spec.task_roles}
    assert list(roles) == ["master", "taskrole"]
    assert roles["master"].instances == 1
    assert roles["taskrole"].instances == 500
    assert roles["taskrole"].gpu == 0
    assert "$PAI_CURRENT_TASK_ROLE_CURRENT_TASK_INDEX" in roles["taskrole"].entrypoint


def test_full_featured_job() -> None:
    parsed = _parse(BASE, "carol")
    spec = parsed.spec
    assert spec.job_key == "carol~cifar10_ps_worker"
    assert spec.virtual_cluster == "research"
    assert spec.priority == 100
    assert spec.job_retry_count == 1
    worker, ps = spec.task_roles
    assert (worker.name, worker.instances, worker.cpu, worker.memory_mb, worker.gpu) == (
        "worker",
        2,
        4,
        8192,
        2,
    )
    assert worker.min_failed_instances == 1
    assert worker.min_succeeded_instances is None
    # gangAllocation is false, so single tasks may be retried.
    assert worker.task_retry_count == 2
    assert (ps.name, ps.instances, ps.gpu, ps.min_failed_instances, ps.min_succeeded_instances) == (
        "ps",
        1,
        0,
        1,
        1,
    )


def test_protocol_version_may_be_a_string() -> None:
    spec = _parse(_variant(lambda d: d.update(protocolVersion="2"))).spec
    assert spec.name == "cifar10_ps_worker"


def test_defaults_without_optional_sections() -> None:
    doc = {
        "protocolVersion": 2,
        "name": "minimal",
        "type": "job",
        "taskRoles": {"main": {"resourcePerInstance": {"cpu": 1, "memoryMB": 512}, "commands": ["true"]}},
    }
    spec = _parse(doc).spec
    assert spec.virtual_cluster == "default"
    assert spec.priority == 10
    assert spec.job_retry_count == 0
    (role,) = spec.task_roles
    assert (role.instances, role.gpu, role.min_failed_instances, role.min_succeeded_instances) == (1, 0, 1, 1)
    assert role.task_retry_count == 0


@pytest.mark.parametrize(
    ("priority_class", "priority"), [("crit", 120), ("prod", 100), ("test", 10), ("oppo", -1)]
)
def test_priority_classes(priority_class: str, priority: int) -> None:
    doc = _variant(lambda d: d["extras"]["hivedScheduler"].update(jobPriorityClass=priority_class))
    assert _parse(doc).spec.priority == priority


def test_task_retries_only_without_gang_allocation() -> None:
    gang = _variant(lambda d: d["extras"].update(gangAllocation=True))
    assert _parse(gang).spec.task_roles[0].task_retry_count == 0
    default = _variant(lambda d: d["extras"].pop("gangAllocation"))
    assert _parse(default).spec.task_roles[0].task_retry_count == 0


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ({}, (1, 2)),
        ({"minFailedInstances": None, "minSucceededInstances": None}, (1, 2)),
        ({"minFailedInstances": 0, "minSucceededInstances": 0}, (1, 2)),
        ({"minFailedInstances": -1, "minSucceededInstances": -1}, (None, None)),
        ({"minFailedInstances": 2, "minSucceededInstances": 1}, (2, 1)),
    ],
)
def test_completion_policy(completion: dict[str, Any], expected: tuple[int | None, int | None]) -> None:
    doc = _variant(lambda d: _role(d).update(completion=completion))
    role = _parse(doc).spec.task_roles[0]
    assert (role.min_failed_instances, role.min_succeeded_instances) == expected


def test_docker_image_is_free_without_prerequisites() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d.pop("prerequisites")
        d.pop("deployments")
        d.pop("defaults")
        for role in d["taskRoles"].values():
            for key in ("script", "data", "output"):
                role.pop(key, None)
        _role(d)["dockerImage"] = "python:3.11"

    assert _parse(_variant(mutate)).spec.task_roles[0].name == "worker"


def test_yaml_1_1_booleans_and_dates_stay_strings() -> None:
    doc = _variant(lambda d: _role(d).update(commands=["yes", "on", "off"]))
    text = (
        yaml.safe_dump(doc, sort_keys=False)
        .replace("'yes'", "yes")
        .replace("'on'", "on")
        .replace("'off'", "off")
    )
    text += "description: 2024-01-02\n"
    parsed = _parse(text)
    assert parsed.spec.task_roles[0].entrypoint.endswith("yes\non\noff\nupload hdfs://storage/model")
    assert parsed.raw["description"] == "2024-01-02"


def test_small_aliases_are_allowed() -> None:
    text = """
protocolVersion: 2
name: anchors
type: job
taskRoles:
  a:
    resourcePerInstance: &res {cpu: 1, memoryMB: 1024, gpu: 1}
    commands: [run a]
  b:
    resourcePerInstance: *res
    commands: [run b]
"""
    roles = _parse(text).spec.task_roles
    assert [(role.name, role.gpu) for role in roles] == [("a", 1), ("b", 1)]


def test_parsed_job_is_frozen() -> None:
    parsed = _parse(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.raw = {}  # type: ignore[misc]


# What OpenPAI's protocol schema accepts and this platform once refused: each variant is accepted and kept
# in the stored config as submitted.
ACCEPTED_AS_OPENPAI_DOES: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("a field protocol v2 does not name", lambda d: d.update(taskrole={"note": 1})),
    ("a task role field protocol v2 does not name", lambda d: _role(d).update(command=["x"])),
    (
        "marketplace-style prerequisite",
        lambda d: d["prerequisites"][0].update(
            protocolVersion=2, version="1.0-r1.4", contributor="OpenPAI", description="a TF image"
        ),
    ),
    ("prerequisite protocolVersion '2'", lambda d: d["prerequisites"][1].update(protocolVersion="2")),
    (
        "docker image prerequisite with other fields",
        lambda d: d["prerequisites"][0].update(plugin="x", extra=[1]),
    ),
    ("auth with other fields", lambda d: d["prerequisites"][0].update(auth={"username": "u", "token": "t"})),
    (
        "script plugin fields",
        lambda d: d["prerequisites"][1].update(plugin="git", require=["image"], callbacks=[]),
    ),
    ("data prerequisite without a name", lambda d: d["prerequisites"].append({"type": "data", "uri": ["x"]})),
    ("empty script uri", lambda d: d["prerequisites"][1].update(uri="")),
    ("empty commands", lambda d: _role(d, "ps").update(commands=[])),
    ("deployment without a name (never chosen)", lambda d: d["deployments"][1].pop("name")),
    ("integral float", lambda d: _role(d).update(instances=2.0, taskRetryCount=1.0)),
    ("defaults with other fields", lambda d: d["defaults"].update(note="x")),
    ("empty virtual cluster (the default)", lambda d: d["defaults"].update(virtualCluster="")),
    ("virtual cluster with any characters", lambda d: d["defaults"].update(virtualCluster="team-a/b")),
    (
        "deployment role hooks with other fields",
        lambda d: d["deployments"][0]["taskRoles"]["worker"].update(env={}),
    ),
    (
        "notification with other fields",
        lambda d: d["extras"].update(jobStatusChangeNotification={"paused": True}),
    ),
]


@pytest.mark.parametrize(
    "mutate",
    [case[1] for case in ACCEPTED_AS_OPENPAI_DOES],
    ids=[case[0] for case in ACCEPTED_AS_OPENPAI_DOES],
)
def test_what_openpai_accepts_is_accepted_and_kept(mutate: Callable[[dict[str, Any]], None]) -> None:
    doc = _variant(mutate)
    assert doc != BASE, "the mutation changed nothing"
    parsed = _parse(doc)
    assert parsed.raw == doc
    assert {k: v for k, v in parsed.masked.items() if k != "secrets"} == {
        k: v for k, v in doc.items() if k != "secrets"
    }


def test_integral_floats_become_integers() -> None:
    spec = _parse(_variant(lambda d: _role(d).update(instances=3.0))).spec
    worker = next(r for r in spec.task_roles if r.name == "worker")
    assert worker.instances == 3 and isinstance(worker.instances, int)


def test_virtual_cluster_is_taken_as_written() -> None:
    assert (
        _parse(_variant(lambda d: d["defaults"].update(virtualCluster="team-a"))).spec.virtual_cluster
        == "team-a"
    )
    assert (
        _parse(_variant(lambda d: d["defaults"].update(virtualCluster=""))).spec.virtual_cluster == "default"
    )


def test_empty_commands_run_the_deployment_hooks_only() -> None:
    spec = _parse(_variant(lambda d: _role(d).update(commands=[]))).spec
    worker = next(r for r in spec.task_roles if r.name == "worker")
    assert worker.entrypoint == "wget https://data.example/cifar10.tgz\nupload hdfs://storage/model"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('parameters:\n  "a\\0b": 1\n', "parameters.a\\x00b"),
        ('parameters:\n  a: "\\ud800"\n', "parameters.a"),
    ],
)
def test_what_the_stored_document_cannot_hold_is_refused(text: str, field: str) -> None:
    base = yaml.safe_dump({k: v for k, v in BASE.items() if k != "parameters"}, sort_keys=False)
    assert _fields(base + text) == [field]


# ---- rendering -------------------------------------------------------------------------------------


def _entrypoint(commands: list[str], role: str = "worker", **changes: Any) -> str:
    def mutate(d: dict[str, Any]) -> None:
        _role(d, role)["commands"] = commands
        d["defaults"].pop("deployment")
        d.update(changes)

    return next(r.entrypoint for r in _parse(_variant(mutate)).spec.task_roles if r.name == role)


def test_parameters_are_substituted() -> None:
    assert _entrypoint(["train --model=<% $parameters.model %> --batch <%$parameters.batch%>"]) == (
        "train --model=resnet20 --batch 32"
    )


def test_nested_and_indexed_parameters() -> None:
    assert _entrypoint(["lr=<% $parameters.opt.lr %> first=<% $parameters.flags[0] %>"]) == "lr=0.5 first=a"


def test_parameter_values_print_as_in_javascript() -> None:
    # 1.0 is the number 1; a list prints comma-separated.
    assert _entrypoint(["<% $parameters.opt.steps %> <% $parameters.flags %>"]) == "1 a,b"


def test_unknown_references_are_kept() -> None:
    commands = [
        "a <% $parameters.missing %>",
        "b <% $parameters.opt %>",
        "c <% $unknown.thing %>",
        "d <% not a reference %>",
        "e <% $parameters.flags[9] %>",
    ]
    assert _entrypoint(commands) == "\n".join(commands)


def test_secrets_are_left_for_the_runtime() -> None:
    assert _entrypoint(["login <% $secrets.token %>"]) == "login <% $secrets.token %>"


def test_substituted_values_are_not_rendered_again() -> None:
    doc = _variant(lambda d: d["parameters"].update(model="<% $parameters.batch %>"))
    assert "--model=<% $parameters.batch %>" in _parse(doc).spec.task_roles[0].entrypoint


def test_script_output_and_data_references() -> None:
    commands = [
        "git clone <% $script %> <% $script.name %>@<% $script.version %>",
        "wget <% $data %> first=<% $data.uri[0] %>",
        "cp model <% $output %>",
    ]
    assert _entrypoint(commands).splitlines() == [
        "git clone github.com/example/benchmarks bench@abc123",
        "wget https://data.example/cifar10.tgz,https://mirror/c.tgz first=https://data.example/cifar10.tgz",
        "cp model hdfs://storage/model",
    ]


def test_prerequisite_references_are_scoped_to_the_role() -> None:
    # The ps role selects no script: `$script` means nothing there.
    assert _entrypoint(["run <% $script %>"], role="ps") == "run <% $script %>"


def test_deployment_pre_and_post_commands() -> None:
    worker, ps = _parse(BASE).spec.task_roles
    assert worker.entrypoint.splitlines() == [
        "wget https://data.example/cifar10.tgz",
        "python train.py --model=resnet20",
        "echo done",
        "upload hdfs://storage/model",
    ]
    # The prod deployment has nothing for ps; dev's preCommands are not used.
    assert ps.entrypoint == "python ps.py"


def test_other_deployment_is_chosen_by_defaults() -> None:
    worker, ps = _parse(_variant(lambda d: d["defaults"].update(deployment="dev"))).spec.task_roles
    assert worker.entrypoint == "python train.py --model=resnet20\necho done"
    assert ps.entrypoint == "echo dev\npython ps.py"


def test_no_deployment_without_defaults() -> None:
    worker = _parse(_variant(lambda d: d["defaults"].pop("deployment"))).spec.task_roles[0]
    assert worker.entrypoint == "python train.py --model=resnet20\necho done"


def test_folded_commands_lose_their_trailing_newline() -> None:
    text = yaml.safe_dump(_variant(lambda d: d["defaults"].pop("deployment")), sort_keys=False)
    text = text.replace("- echo done", "- >\n        echo\n        folded\n")
    assert _parse(text).spec.task_roles[0].entrypoint == "python train.py --model=resnet20\necho folded"


# ---- secrets ---------------------------------------------------------------------------------------


def test_secrets_are_masked() -> None:
    parsed = _parse(BASE)
    assert parsed.masked["secrets"] == {"token": SECRET_MASK, "nested": SECRET_MASK}
    # The raw document keeps them (it is needed to render them in the container) and is not altered.
    assert parsed.raw["secrets"] == {"token": "s3cr3t", "nested": {"password": "hunter2"}}
    assert "s3cr3t" not in json.dumps(parsed.masked)
    assert "hunter2" not in json.dumps(parsed.masked)
    # Everything else is the same document, as a separate copy.
    assert {k: v for k, v in parsed.masked.items() if k != "secrets"} == {
        k: v for k, v in parsed.raw.items() if k != "secrets"
    }
    parsed.masked["taskRoles"]["worker"]["instances"] = 99
    assert parsed.raw["taskRoles"]["worker"]["instances"] == 2


def test_job_without_secrets_is_unchanged_when_masked() -> None:
    parsed = _parse(_variant(lambda d: d.pop("secrets")))
    assert "secrets" not in parsed.masked
    assert parsed.masked == parsed.raw


# ---- invalid jobs ----------------------------------------------------------------------------------

INVALID: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("no protocolVersion", lambda d: d.pop("protocolVersion"), "protocolVersion"),
    ("protocolVersion 3", lambda d: d.update(protocolVersion=3), "protocolVersion"),
    ("protocolVersion true", lambda d: d.update(protocolVersion=True), "protocolVersion"),
    ("no name", lambda d: d.pop("name"), "name"),
    ("name with a space", lambda d: d.update(name="bad name"), "name"),
    ("name too long", lambda d: d.update(name="n" * 256), "name"),
    ("name not a string", lambda d: d.update(name=12), "name"),
    ("no type", lambda d: d.pop("type"), "type"),
    ("type service", lambda d: d.update(type="service"), "type"),
    ("jobRetryCount negative", lambda d: d.update(jobRetryCount=-1), "jobRetryCount"),
    ("jobRetryCount string", lambda d: d.update(jobRetryCount="1"), "jobRetryCount"),
    ("parameters a list", lambda d: d.update(parameters=["a"]), "parameters"),
    ("secrets a string", lambda d: d.update(secrets="x"), "secrets"),
    ("no taskRoles", lambda d: d.pop("taskRoles"), "taskRoles"),
    ("empty taskRoles", lambda d: d.update(taskRoles={}), "taskRoles"),
    ("taskRoles a list", lambda d: d.update(taskRoles=[]), "taskRoles"),
    ("bad role name", lambda d: d["taskRoles"].update({"1st": _role(d, "ps")}), "taskRoles.1st"),
    ("role not a mapping", lambda d: d["taskRoles"].update(ps="run"), "taskRoles.ps"),
    ("no commands", lambda d: _role(d).pop("commands"), "taskRoles.worker.commands"),
    ("commands a string", lambda d: _role(d).update(commands="run"), "taskRoles.worker.commands"),
    ("command not a string", lambda d: _role(d).update(commands=["ok", 3]), "taskRoles.worker.commands.1"),
    ("instances 0", lambda d: _role(d).update(instances=0), "taskRoles.worker.instances"),
    ("instances string", lambda d: _role(d).update(instances="2"), "taskRoles.worker.instances"),
    ("instances float", lambda d: _role(d).update(instances=1.5), "taskRoles.worker.instances"),
    (
        "prerequisite protocolVersion 3",
        lambda d: d["prerequisites"][0].update(protocolVersion=3),
        "prerequisites.0.protocolVersion",
    ),
    (
        "prerequisite version a list",
        lambda d: d["prerequisites"][1].update(version=[1]),
        "prerequisites.1.version",
    ),
    (
        "prerequisite plugin a number",
        lambda d: d["prerequisites"][1].update(plugin=1),
        "prerequisites.1.plugin",
    ),
    (
        "prerequisite name too long",
        lambda d: d["prerequisites"].append({"type": "output", "name": "o" * 256, "uri": "x"}),
        "prerequisites.4.name",
    ),
    ("docker image uri a number", lambda d: d["prerequisites"][0].update(uri=5), "prerequisites.0.uri"),
    (
        "auth password a number",
        lambda d: d["prerequisites"][0].update(auth={"password": 5}),
        "prerequisites.0.auth.password",
    ),
    ("integer beyond 64 bits", lambda d: d["parameters"].update(big=2**64), "parameters.big"),
    (
        "taskRetryCount negative",
        lambda d: _role(d).update(taskRetryCount=-1),
        "taskRoles.worker.taskRetryCount",
    ),
    ("no resources", lambda d: _role(d).pop("resourcePerInstance"), "taskRoles.worker.resourcePerInstance"),
    (
        "resources a list",
        lambda d: _role(d).update(resourcePerInstance=[1]),
        "taskRoles.worker.resourcePerInstance",
    ),
    (
        "negative cpu",
        lambda d: _role(d)["resourcePerInstance"].update(cpu=-1),
        "taskRoles.worker.resourcePerInstance.cpu",
    ),
    (
        "no memoryMB",
        lambda d: _role(d)["resourcePerInstance"].pop("memoryMB"),
        "taskRoles.worker.resourcePerInstance.memoryMB",
    ),
    (
        "gpu a string",
        lambda d: _role(d)["resourcePerInstance"].update(gpu="1"),
        "taskRoles.worker.resourcePerInstance.gpu",
    ),
    (
        "gpu a boolean",
        lambda d: _role(d)["resourcePerInstance"].update(gpu=True),
        "taskRoles.worker.resourcePerInstance.gpu",
    ),
    (
        "bad port label",
        lambda d: _role(d)["resourcePerInstance"].update(ports={"bad-label": 1}),
        "taskRoles.worker.resourcePerInstance.ports.bad-label",
    ),
    (
        "minFailedInstances -2",
        lambda d: _role(d)["completion"].update(minFailedInstances=-2),
        "taskRoles.worker.completion.minFailedInstances",
    ),
    (
        "minSucceededInstances a string",
        lambda d: _role(d)["completion"].update(minSucceededInstances="all"),
        "taskRoles.worker.completion.minSucceededInstances",
    ),
    ("completion a list", lambda d: _role(d).update(completion=[1]), "taskRoles.worker.completion"),
    ("unknown docker image", lambda d: _role(d).update(dockerImage="nope"), "taskRoles.worker.dockerImage"),
    (
        "docker image names a script",
        lambda d: _role(d).update(dockerImage="bench"),
        "taskRoles.worker.dockerImage",
    ),
    ("unknown script", lambda d: _role(d).update(script="nope"), "taskRoles.worker.script"),
    ("data names an output", lambda d: _role(d).update(data="model"), "taskRoles.worker.data"),
    (
        "unknown role prerequisite",
        lambda d: _role(d).update(prerequisites=["nope"]),
        "taskRoles.worker.prerequisites.0",
    ),
    (
        "shmMB string",
        lambda d: _role(d).update(extraContainerOptions={"shmMB": "64"}),
        "taskRoles.worker.extraContainerOptions.shmMB",
    ),
    ("prerequisites a mapping", lambda d: d.update(prerequisites={"a": 1}), "prerequisites"),
    ("prerequisite not a mapping", lambda d: d["prerequisites"].append("x"), "prerequisites.4"),
    (
        "unknown prerequisite type",
        lambda d: d["prerequisites"][1].update(type="model"),
        "prerequisites.1.type",
    ),
    ("docker image without uri", lambda d: d["prerequisites"][0].pop("uri"), "prerequisites.0.uri"),
    ("prerequisite without name", lambda d: d["prerequisites"][3].pop("name"), "prerequisites.3.name"),
    ("bad prerequisite name", lambda d: d["prerequisites"][3].update(name="a b"), "prerequisites.3.name"),
    ("data uri a string", lambda d: d["prerequisites"][2].update(uri="https://x"), "prerequisites.2.uri"),
    (
        "duplicate prerequisite",
        lambda d: d["prerequisites"].append({"type": "output", "name": "model", "uri": "x"}),
        "prerequisites.4.name",
    ),
    ("deployments a mapping", lambda d: d.update(deployments={}), "deployments"),
    ("duplicate deployment", lambda d: d["deployments"][1].update(name="prod"), "deployments.1.name"),
    (
        "deployment for an unknown role",
        lambda d: d["deployments"][0]["taskRoles"].update(ghost={}),
        "deployments.0.taskRoles.ghost",
    ),
    (
        "preCommand not a string",
        lambda d: d["deployments"][0]["taskRoles"]["worker"].update(preCommands=[1]),
        "deployments.0.taskRoles.worker.preCommands.0",
    ),
    ("unknown default deployment", lambda d: d["defaults"].update(deployment="test"), "defaults.deployment"),
    ("defaults a list", lambda d: d.update(defaults=[]), "defaults"),
    ("extras a list", lambda d: d.update(extras=[]), "extras"),
    (
        "unknown priority class",
        lambda d: d["extras"]["hivedScheduler"].update(jobPriorityClass="urgent"),
        "extras.hivedScheduler.jobPriorityClass",
    ),
    ("gangAllocation a string", lambda d: d["extras"].update(gangAllocation="no"), "extras.gangAllocation"),
]


def test_base_is_valid() -> None:
    assert _parse(BASE).spec.name == "cifar10_ps_worker"


@pytest.mark.parametrize(
    ("mutate", "field"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_variant_names_its_field(mutate: Callable[[dict[str, Any]], None], field: str) -> None:
    doc = _variant(mutate)
    if doc == BASE:
        pytest.fail("the mutation changed nothing")
    assert _fields(doc) == [field]


def test_all_problems_are_reported_together() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["name"] = "bad name"
        d["jobRetryCount"] = -3
        _role(d)["instances"] = 0
        _role(d, "ps")["resourcePerInstance"]["cpu"] = "many"
        d["defaults"]["deployment"] = "nope"

    assert _fields(_variant(mutate)) == [
        "name",
        "jobRetryCount",
        "taskRoles.worker.instances",
        "taskRoles.ps.resourcePerInstance.cpu",
        "defaults.deployment",
    ]


def test_messages_say_what_is_wrong() -> None:
    (problem,) = _problems(_variant(lambda d: _role(d).update(instances=0)))
    assert problem["message"] == "must be at least 1, got 0"
    (problem,) = _problems(_variant(lambda d: _role(d).update(dockerImage="nope")))
    assert "nope" in problem["message"] and "dockerimage" in problem["message"]
    (problem,) = _problems(_variant(lambda d: d.pop("name")))
    assert problem["message"] == "is required"


def test_error_code_and_status() -> None:
    with pytest.raises(InvalidProtocolError) as caught:
        _parse(_variant(lambda d: d.pop("name")))
    assert caught.value.status == 400
    assert caught.value.to_body()["code"] == "InvalidProtocolError"


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n", "42\n", "null\n"])
def test_non_mapping_document_is_refused(text: str) -> None:
    (problem,) = _problems(text)
    assert problem["field"] == ROOT_FIELD
    assert "mapping" in problem["message"]


def test_invalid_yaml_is_refused_with_its_position() -> None:
    (problem,) = _problems("protocolVersion: 2\nname: [unclosed\ntype: job\n")
    assert problem["field"] == ROOT_FIELD
    assert problem["message"].startswith("invalid YAML")
    assert "line" in problem["message"]


def test_several_documents_are_refused() -> None:
    text = yaml.safe_dump(BASE) + "---\n" + yaml.safe_dump(BASE)
    (problem,) = _problems(text)
    assert problem["field"] == ROOT_FIELD


def test_duplicate_keys_are_refused() -> None:
    text = yaml.safe_dump(BASE, sort_keys=False) + "name: again\n"
    (problem,) = _problems(text)
    assert problem["field"] == ROOT_FIELD
    assert "duplicate key 'name'" in problem["message"]


def test_non_json_values_are_refused() -> None:
    text = yaml.safe_dump(BASE, sort_keys=False) + "description: !!binary aGVsbG8=\n"
    assert _fields(text) == ["description"]
    text = yaml.safe_dump(BASE, sort_keys=False).replace("model: resnet20", "model: !!set {a, b}")
    assert _fields(text) == ["parameters.model"]


def test_non_string_keys_are_refused() -> None:
    text = yaml.safe_dump(BASE, sort_keys=False).replace("  model: resnet20", "  1: resnet20")
    assert _fields(text) == ["parameters.1"]


# ---- hostile documents -----------------------------------------------------------------------------

BILLION_LAUGHS = """
protocolVersion: 2
name: lol
type: job
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
taskRoles: *i
"""


def test_billion_laughs_is_refused_quickly() -> None:
    started = time.monotonic()
    (problem,) = _problems(BILLION_LAUGHS)
    assert time.monotonic() - started < 1.0
    assert problem["field"] == ROOT_FIELD
    assert f"more than {MAX_NODES} nodes" in problem["message"]


def test_many_plain_nodes_are_refused() -> None:
    doc = _variant(lambda d: d["parameters"].update(big=list(range(MAX_NODES))))
    (problem,) = _problems(doc)
    assert f"more than {MAX_NODES} nodes" in problem["message"]


def test_recursive_alias_is_refused() -> None:
    (problem,) = _problems(yaml.safe_dump(BASE, sort_keys=False) + "description: &loop [1, *loop]\n")
    assert problem["field"] == ROOT_FIELD
    assert "recursive" in problem["message"]


def test_deep_nesting_is_refused() -> None:
    text = yaml.safe_dump(BASE, sort_keys=False) + "description: " + "[" * 5000 + "]" * 5000 + "\n"
    (problem,) = _problems(text)
    assert problem["field"] == ROOT_FIELD
    assert "nested" in problem["message"]


def test_oversized_body_is_refused() -> None:
    text = yaml.safe_dump(BASE, sort_keys=False)
    padding = "#" * (MAX_BODY_BYTES - len(text.encode()))
    # Exactly at the limit is still accepted.
    assert _parse(text + padding).spec.name == "cifar10_ps_worker"
    with pytest.raises(PayloadTooLargeError) as caught:
        _parse(text + padding + "#")
    assert caught.value.status == 413


def test_oversized_body_is_measured_in_bytes() -> None:
    # Fewer characters than the limit, but more bytes once encoded.
    text = yaml.safe_dump(BASE, sort_keys=False) + "# " + "é" * (MAX_BODY_BYTES // 2) + "\n"
    assert len(text) < MAX_BODY_BYTES
    with pytest.raises(PayloadTooLargeError):
        _parse(text)


# ---- hivedScheduler task roles ----------------------------------------------------------------------


def test_hived_task_roles_give_sku_types_and_pinned_cells() -> None:
    doc = _variant(
        lambda d: d["extras"]["hivedScheduler"].update(
            {"taskRoles": {"worker": {"skuType": "A100|H100"}, "ps": {"pinnedCellId": "rack-7"}}}
        )
    )
    roles = {r.name: r for r in _parse(doc).spec.task_roles}
    assert roles["worker"].sku_types == ("A100", "H100") and roles["worker"].pinned_cell is None
    assert roles["ps"].sku_types == () and roles["ps"].pinned_cell == "rack-7"


@pytest.mark.parametrize(
    ("task_roles", "field"),
    [
        ({"ghost": {"skuType": "A100"}}, "extras.hivedScheduler.taskRoles.ghost"),
        ({"worker": {"skuType": "A100||"}}, "extras.hivedScheduler.taskRoles.worker.skuType"),
        ({"worker": {"pinnedCellId": 7}}, "extras.hivedScheduler.taskRoles.worker.pinnedCellId"),
        ({"worker": "A100"}, "extras.hivedScheduler.taskRoles.worker"),
    ],
)
def test_bad_hived_task_roles_are_refused(task_roles: dict[str, Any], field: str) -> None:
    doc = _variant(lambda d: d["extras"]["hivedScheduler"].update({"taskRoles": task_roles}))
    assert _fields(doc) == [field]


def test_a_gpu_share_and_lazy_preemption() -> None:
    def mutate(d: dict[str, Any]) -> None:
        _role(d)["resourcePerInstance"]["gpu"] = 0.25
        d["extras"]["hivedScheduler"].update(
            {"lazyPreemptionEnable": True, "taskRoles": {"worker": {"gpuMemoryMB": 4096}}}
        )

    spec = _parse(_variant(mutate)).spec
    worker = next(r for r in spec.task_roles if r.name == "worker")
    assert (worker.gpu, worker.gpu_milli, worker.gpu_memory_mb) == (0, 250, 4096)
    assert spec.lazy_preemption is True
    assert _parse(BASE).spec.lazy_preemption is False


@pytest.mark.parametrize("gpu", [1.5, -0.5, 0.0001])
def test_gpu_must_be_whole_or_a_share_below_one(gpu: float) -> None:
    doc = _variant(lambda d: _role(d)["resourcePerInstance"].update({"gpu": gpu}))
    assert _fields(doc) == ["taskRoles.worker.resourcePerInstance.gpu"]


def test_lazy_preemption_flag_must_be_a_boolean() -> None:
    doc = _variant(lambda d: d["extras"]["hivedScheduler"].update({"lazyPreemptionEnable": "yes"}))
    assert _fields(doc) == ["extras.hivedScheduler.lazyPreemptionEnable"]


def test_infiniband_reaches_the_task_role() -> None:
    doc = _variant(lambda d: _role(d).update({"extraContainerOptions": {"infiniband": True, "shmMB": 64}}))
    roles = {r.name: r for r in _parse(doc).spec.task_roles}
    assert roles["worker"].infiniband is True and roles["ps"].infiniband is False


def test_a_job_of_more_tasks_than_the_bus_can_describe_is_refused_by_name() -> None:
    """README "stricter" item 7: at most MAX_TASKS task instances in all (each message about a job carries
    each task's status, and a message is at most 1 MiB); exactly MAX_TASKS are accepted."""
    doc = copy.deepcopy(BASE)
    doc["taskRoles"]["worker"]["instances"] = MAX_TASKS - 1  # and "ps": 1
    assert sum(r.instances for r in _parse(doc).spec.task_roles) == MAX_TASKS
    doc["taskRoles"]["worker"]["instances"] = MAX_TASKS
    [problem] = _problems(doc)
    assert problem["field"] == "taskRoles"
    assert f"{MAX_TASKS + 1} task instances in all; at most {MAX_TASKS}" in problem["message"]
