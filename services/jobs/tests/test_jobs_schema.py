"""The protocol v2 JSON Schema (proto/job-protocol) and what it adds to the checks of pai_jobs.protocol:
precise per-field messages for the sections only the schema covers, the new JobSpec fields, and fuzzing
of the parser (nothing crashes it, nothing takes long)."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from pai_common.errors import InvalidProtocolError, PayloadTooLargeError
from pai_common.reference import reference_files
from pai_jobs.protocol import MAX_BODY_BYTES, parse_job
from pai_jobs.schema import SCHEMA, schema_problems

REPO = Path(__file__).resolve().parents[3]
PROTO_SCHEMA = REPO / "proto" / "job-protocol" / "protocol-v2.schema.json"
PACKAGED_SCHEMA = REPO / "services" / "jobs" / "pai_jobs" / "protocol_v2.schema.json"
DATA_DIR = Path(__file__).parent / "data"
# The project's own examples (the corpus every clone has), and OpenPAI's where they sit beside it.
OWN_EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
REFERENCE_EXAMPLES = reference_files(
    "openpai/examples", "*.yaml", "OpenPAI's examples meet the schema and render"
)
NOW = 1_700_000_000_000


def _examples() -> list[Path]:
    return [*OWN_EXAMPLES, *sorted(DATA_DIR.glob("*.yaml")), *REFERENCE_EXAMPLES]


# ---- the schema itself -------------------------------------------------------------------------------


def test_packaged_schema_is_the_one_in_proto() -> None:
    assert PACKAGED_SCHEMA.read_bytes() == PROTO_SCHEMA.read_bytes()
    assert json.loads(PROTO_SCHEMA.read_text()) == SCHEMA


def test_schema_is_a_valid_json_schema() -> None:
    Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", _examples(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_example_meets_the_schema_and_renders(path: Path) -> None:
    text = path.read_text()
    assert schema_problems(yaml.safe_load(text)) == []
    spec = parse_job(text, "alice", NOW).spec
    for role in spec.task_roles:
        assert role.entrypoint.strip()
        assert "<% $parameters" not in role.entrypoint  # every parameter reference was rendered
        assert role.image  # every example names its docker image


def test_the_project_examples_are_all_there() -> None:
    # Guards the parametrised test above against passing vacuously when the folder moves.
    assert len(OWN_EXAMPLES) >= 11


@pytest.mark.reference("openpai/examples")
def test_reference_examples_are_all_there() -> None:
    assert len(REFERENCE_EXAMPLES) == 18


# ---- invalid variants only the schema catches -------------------------------------------------------

BASE: dict[str, Any] = {
    "protocolVersion": 2,
    "name": "schema_job",
    "type": "job",
    "version": "1.0",
    "contributor": "alice",
    "description": "a job that uses the sections the schema covers",
    "prerequisites": [
        {
            "type": "dockerimage",
            "name": "image",
            "uri": "registry.example/train:1",
            "auth": {
                "username": "u",
                "password": "<% $secrets.registry %>",
                "registryuri": "registry.example",
            },
        },
        {"type": "script", "name": "code", "uri": "https://git.example/code", "plugin": "git"},
    ],
    "secrets": {"registry": "pa55"},
    "taskRoles": {
        "worker": {
            "instances": 2,
            "dockerImage": "image",
            "script": "code",
            "extraContainerOptions": {"shmMB": 1024, "infiniband": True},
            "resourcePerInstance": {"cpu": 2, "memoryMB": 2048, "gpu": 1, "ports": {"http": 1, "nccl": 2}},
            "commands": ["python train.py"],
        }
    },
    "extras": {
        "gangAllocation": True,
        "hivedScheduler": {
            "jobPriorityClass": "prod",
            "gangReleaseEnable": False,
            "taskRoles": {"worker": {"skuType": "A100", "skuNumber": 1, "affinityGroupName": None}},
        },
        "com.microsoft.pai.runtimeplugin": [
            {"plugin": "ssh", "parameters": {"jobssh": True}, "failurePolicy": "ignore"},
            {"plugin": "tensorboard", "parameters": {"port": 6006}, "taskroles": ["worker"]},
        ],
        "storages": [{"name": "shared", "mountPath": "/mnt/shared"}],
        "jobStatusChangeNotification": {"failed": True, "succeeded": False},
        "submitFrom": "cli",
    },
}


def _text(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


def _problems(doc: dict[str, Any]) -> list[dict[str, str]]:
    with pytest.raises(InvalidProtocolError) as caught:
        parse_job(_text(doc), "alice", NOW)
    problems: list[dict[str, str]] = json.loads(caught.value.message)
    return problems


def _variant(mutate: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    mutate(doc)
    return doc


def _extras(d: dict[str, Any]) -> dict[str, Any]:
    extras: dict[str, Any] = d["extras"]
    return extras


def _plugins(d: dict[str, Any]) -> list[dict[str, Any]]:
    plugins: list[dict[str, Any]] = d["extras"]["com.microsoft.pai.runtimeplugin"]
    return plugins


SCHEMA_ONLY: list[tuple[str, Callable[[dict[str, Any]], object], str, str]] = [
    (
        "version a list",
        lambda d: d.update(version=[1]),
        "version",
        "must be a string or a number, got a list",
    ),
    (
        "contributor a number",
        lambda d: d.update(contributor=7),
        "contributor",
        "must be a string, got number 7",
    ),
    (
        "description a mapping",
        lambda d: d.update(description={}),
        "description",
        "must be a string, got a mapping",
    ),
    (
        "auth password a number",
        lambda d: d["prerequisites"][0]["auth"].update(password=1234),
        "prerequisites.0.auth.password",
        "must be a string, got number 1234",
    ),
    (
        "script uri a list",
        lambda d: d["prerequisites"][1].update(uri=["a"]),
        "prerequisites.1.uri",
        "must be a string, got a list",
    ),
    (
        "role prerequisites a string",
        lambda d: d["taskRoles"]["worker"].update(prerequisites="code"),
        "taskRoles.worker.prerequisites",
        "must be a list, got string 'code'",
    ),
    (
        "port count negative",
        lambda d: d["taskRoles"]["worker"]["resourcePerInstance"]["ports"].update(http=-1),
        "taskRoles.worker.resourcePerInstance.ports.http",
        "must be at least 0, got -1",
    ),
    (
        "gangReleaseEnable a string",
        lambda d: _extras(d)["hivedScheduler"].update(gangReleaseEnable="yes"),
        "extras.hivedScheduler.gangReleaseEnable",
        "must be a boolean, got string 'yes'",
    ),
    (
        "skuNumber 0",
        lambda d: _extras(d)["hivedScheduler"]["taskRoles"]["worker"].update(skuNumber=0),
        "extras.hivedScheduler.taskRoles.worker.skuNumber",
        "must be at least 1, got 0",
    ),
    (
        "plugin without a name",
        lambda d: _plugins(d)[0].pop("plugin"),
        "extras.com.microsoft.pai.runtimeplugin.0.plugin",
        "is required",
    ),
    (
        "unknown failure policy",
        lambda d: _plugins(d)[0].update(failurePolicy="retry"),
        "extras.com.microsoft.pai.runtimeplugin.0.failurePolicy",
        "must be one of ignore, fail, got string 'retry'",
    ),
    (
        "plugin task roles a string",
        lambda d: _plugins(d)[1].update(taskroles="worker"),
        "extras.com.microsoft.pai.runtimeplugin.1.taskroles",
        "must be a list, got string 'worker'",
    ),
    (
        "plugins a mapping",
        lambda d: _extras(d).update({"com.microsoft.pai.runtimeplugin": {"plugin": "ssh"}}),
        "extras.com.microsoft.pai.runtimeplugin",
        "must be a list, got a mapping",
    ),
    (
        "storage without a name",
        lambda d: _extras(d)["storages"][0].pop("name"),
        "extras.storages.0.name",
        "is required",
    ),
    (
        "empty mount path",
        lambda d: _extras(d)["storages"][0].update(mountPath=""),
        "extras.storages.0.mountPath",
        "must be a non-empty string",
    ),
    (
        "notification not a boolean",
        lambda d: _extras(d)["jobStatusChangeNotification"].update(failed="always"),
        "extras.jobStatusChangeNotification.failed",
        "must be a boolean, got string 'always'",
    ),
    (
        "submitFrom a number",
        lambda d: _extras(d).update(submitFrom=3),
        "extras.submitFrom",
        "must be a string, got number 3",
    ),
]


def test_base_is_valid() -> None:
    assert schema_problems(BASE) == []
    assert parse_job(_text(BASE), "alice", NOW).spec.name == "schema_job"


@pytest.mark.parametrize(
    ("mutate", "field", "message"), [case[1:] for case in SCHEMA_ONLY], ids=[case[0] for case in SCHEMA_ONLY]
)
def test_schema_only_variant_is_refused_precisely(
    mutate: Callable[[dict[str, Any]], object], field: str, message: str
) -> None:
    assert _problems(_variant(mutate)) == [{"field": field, "message": message}]


def test_a_problem_found_by_both_checks_is_reported_once() -> None:
    doc = _variant(lambda d: d["taskRoles"]["worker"].update(instances=0))
    assert _problems(doc) == [{"field": "taskRoles.worker.instances", "message": "must be at least 1, got 0"}]


def test_schema_and_semantic_problems_come_in_one_error() -> None:
    def mutate(d: dict[str, Any]) -> None:
        d["taskRoles"]["worker"]["dockerImage"] = "missing"
        _plugins(d)[0]["failurePolicy"] = "retry"

    fields = [p["field"] for p in _problems(_variant(mutate))]
    assert fields == [
        "taskRoles.worker.dockerImage",
        "extras.com.microsoft.pai.runtimeplugin.0.failurePolicy",
    ]


# ---- the fields JobSpec gained ----------------------------------------------------------------------


def test_new_spec_fields_are_filled() -> None:
    spec = parse_job(_text(BASE), "alice", NOW).spec
    (role,) = spec.task_roles
    assert role.ports == {"http": 1, "nccl": 2}
    assert role.shm_mb == 1024
    assert role.image == "registry.example/train:1"
    assert spec.gang_allocation is True
    assert spec.has_secrets is True
    assert spec.runtime_plugins == BASE["extras"]["com.microsoft.pai.runtimeplugin"]


def test_defaults_of_the_new_fields() -> None:
    doc = _variant(
        lambda d: (d.pop("secrets"), d.pop("extras"), d["taskRoles"]["worker"].pop("extraContainerOptions"))
    )
    spec = parse_job(_text(doc), "alice", NOW).spec
    (role,) = spec.task_roles
    assert role.shm_mb == 512
    assert spec.runtime_plugins == []
    assert spec.has_secrets is False
    assert spec.gang_allocation is True


def test_image_without_prerequisites_is_the_name_given() -> None:
    doc = _variant(lambda d: (d.pop("prerequisites"), d["taskRoles"]["worker"].pop("script")))
    doc["secrets"] = {}
    spec = parse_job(_text(doc), "alice", NOW).spec
    assert spec.task_roles[0].image == "image"
    assert spec.has_secrets is False  # an empty secrets section holds nothing to fetch


def test_secrets_stay_out_of_the_spec() -> None:
    spec = parse_job(_text(BASE), "alice", NOW).spec
    assert "pa55" not in spec.model_dump_json()


# ---- fuzzing ----------------------------------------------------------------------------------------

_OUTCOMES = (InvalidProtocolError, PayloadTooLargeError)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_PATHS = [
    (),
    ("taskRoles",),
    ("taskRoles", "worker"),
    ("taskRoles", "worker", "resourcePerInstance"),
    ("taskRoles", "worker", "extraContainerOptions"),
    ("prerequisites",),
    ("extras",),
    ("extras", "hivedScheduler"),
    ("extras", "com.microsoft.pai.runtimeplugin"),
]


def _parse_quickly(text: str) -> None:
    started = time.perf_counter()
    try:
        parse_job(text, "fuzz", NOW)
    except _OUTCOMES:
        pass
    # Generous: the point is "no pathological input", not a speed figure (that is the benchmark's job).
    assert time.perf_counter() - started < 2.0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_any_text_is_parsed_or_refused(text: str) -> None:
    _parse_quickly(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_PATHS), st.text(max_size=12), _json)
def test_any_value_anywhere_is_parsed_or_refused(path: tuple[str, ...], key: str, value: object) -> None:
    doc: Any = copy.deepcopy(BASE)
    target = doc
    for part in path:
        target = target[part]
    if isinstance(target, dict):
        target[key or "k"] = value
    else:
        target.append(value)
    _parse_quickly(json.dumps(doc))


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=2, max_value=12), st.integers(min_value=2, max_value=12))
def test_alias_bombs_are_refused(width: int, depth: int) -> None:
    lines = ["a0: &a0 [x, x]"]
    for level in range(1, depth + 1):
        refs = ", ".join(f"*a{level - 1}" for _ in range(width))
        lines.append(f"a{level}: &a{level} [{refs}]")
    text = "\n".join(lines) + "\n"
    expanded = 2 * width**depth
    if expanded > 10_000:
        with pytest.raises(InvalidProtocolError, match="expands to more than"):
            parse_job(text, "fuzz", NOW)
    else:
        _parse_quickly(text)


def test_a_body_over_the_limit_is_refused_before_parsing() -> None:
    text = "name: x\n" + "# padding\n" * (MAX_BODY_BYTES // 10 + 1)
    with pytest.raises(PayloadTooLargeError):
        parse_job(text, "fuzz", NOW)
