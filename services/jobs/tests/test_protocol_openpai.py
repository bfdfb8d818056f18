"""A job valid for OpenPAI is never refused here.

OpenPAI's own protocol schema (a copy in ``data/openpai/``) is the judge: every example it carries, and
documents generated from it by Hypothesis, must be accepted by :func:`parse_job` and kept in the stored
config as submitted. The generator applies exactly the restrictions the repository README lists under
"Job protocol: where this platform is stricter than OpenPAI" (``RESTRICTIONS`` and ``_repair`` below,
each marked with the item it implements); nothing else may be refused.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator

from pai_jobs.protocol import INT64_MAX, INT64_MIN, MAX_BODY_BYTES, MAX_DEPTH, MAX_NODES, MAX_TASKS, parse_job

HERE = Path(__file__).parent
SCHEMA_COPY = HERE / "data" / "openpai" / "protocol-v2-schema.yaml"
REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "openpai"
NOW = 1_700_000_000_000
ROLE_NAME = "^[a-zA-Z_][a-zA-Z0-9_]*$"
# Schema keywords whose value is a map of names to schemas (their keys are names, not keywords).
_NAMED_SCHEMAS = ("properties", "definitions")


# ---- documents a JSON Schema accepts ------------------------------------------------------------------
# Hypothesis strategies for the subset of JSON Schema (draft 7) that OpenPAI's protocol schema uses:
# `$ref`, `allOf` (merged), `oneOf` (one branch drawn), `enum`, `type`, object and array keywords, string
# `pattern`/`minLength`/`maxLength`, numeric bounds. Objects also get fields their schema does not name,
# with any JSON value, wherever it does not forbid them: "valid" allows them, so they must be accepted.
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
_BOUNDS = {"minimum": max, "minLength": max, "minItems": max, "minProperties": max}
_LIMITS = {"maximum": min, "maxLength": min, "maxItems": min, "maxProperties": min}


def resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """The schema with `$ref` followed and `allOf` merged into one object schema."""
    while "$ref" in schema:
        ref = schema["$ref"]
        target: Any = root
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        schema = {**{k: v for k, v in schema.items() if k != "$ref"}, **target}
    if "allOf" in schema:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            merged = merge(merged, resolve(part, root), root)
        return merged
    return schema


def merge(a: dict[str, Any], b: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """One schema that accepts what both accept (for the keywords this module knows)."""
    a, b = resolve(a, root), resolve(b, root)
    out = {**a, **b}
    for key, pick in {**_BOUNDS, **_LIMITS}.items():
        if key in a and key in b:
            out[key] = pick(a[key], b[key])
    if "required" in a or "required" in b:
        out["required"] = sorted(set(a.get("required", [])) | set(b.get("required", [])))
    if "properties" in a and "properties" in b:
        props = dict(a["properties"])
        for name, sub in b["properties"].items():
            props[name] = merge(props[name], sub, root) if name in props else sub
        out["properties"] = props
    for key in ("additionalProperties", "items"):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out[key] = merge(a[key], b[key], root)
    if "type" in a and "type" in b:
        both = set(_types(a)) & set(_types(b))
        out["type"] = sorted(both)
    if "enum" in a and "enum" in b:
        out["enum"] = [v for v in a["enum"] if v in b["enum"]]
    return out


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type")
    if kind is None:
        return ["null", "boolean", "integer", "number", "string", "array", "object"]
    return [kind] if isinstance(kind, str) else list(kind)


def from_schema(schema: dict[str, Any], root: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    root = root if root is not None else schema
    schema = resolve(schema, root)
    if "oneOf" in schema:
        rest = {k: v for k, v in schema.items() if k != "oneOf"}
        return st.one_of([from_schema(merge(rest, branch, root), root) for branch in schema["oneOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    if not schema:
        return ANY_JSON
    return st.one_of([_of_type(kind, schema, root) for kind in _types(schema)])


def _of_type(kind: str, schema: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[Any]:
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.one_of(st.integers(low, high), st.floats(low, high, allow_nan=False, allow_infinity=False))
    if kind == "string":
        return _string(schema)
    if kind == "array":
        items = from_schema(schema.get("items", {}), root)
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=schema.get("maxItems", 4))
    return _object(schema, root)


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(
            lambda s: len(s) >= low and (high is None or len(s) <= high)
        )
    return st.text(min_size=low, max_size=high if high is not None else max(low, 20))


@st.composite
def _object_draw(draw: st.DrawFn, schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    out: dict[str, Any] = {}
    for name, sub in props.items():
        if sub is False:
            continue  # JSON Schema's `false`: no value is valid, so the key is never generated
        if name in required or draw(st.booleans()):
            out[name] = draw(from_schema(sub, root))
    extra = schema.get("additionalProperties", True)
    if extra is not False:
        names = schema.get("propertyNames", {})
        key = _string(names) if names else st.text(max_size=12)
        values = ANY_JSON if extra is True else from_schema(extra, root)
        wanted = max(schema.get("minProperties", 0) - len(out), 0)
        pairs = draw(
            st.dictionaries(
                key.filter(lambda k: k not in props), values, min_size=wanted, max_size=max(wanted, 3)
            )
        )
        out.update(pairs)
    return out


def _object(schema: dict[str, Any], root: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return _object_draw(schema, root)


# ---- OpenPAI's schema --------------------------------------------------------------------------------


def _openapi_to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 component schemas as JSON Schema draft 7: `$ref`s re-pointed, annotations dropped."""
    if isinstance(node, list):
        return [_openapi_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("example", "description"):
            continue
        if key == "$ref":
            out[key] = value.replace("#/components/schemas/", "#/definitions/")
        elif key in _NAMED_SCHEMAS:
            out[key] = {name: _openapi_to_json_schema(sub) for name, sub in value.items()}
        else:
            out[key] = _openapi_to_json_schema(value)
    return out


def openpai_schema() -> dict[str, Any]:
    """OpenPAI's JobProtocol schema, as a self-contained draft 7 JSON Schema."""
    components = yaml.safe_load(SCHEMA_COPY.read_text())["components"]["schemas"]
    definitions = {name: _openapi_to_json_schema(schema) for name, schema in components.items()}
    return {"$ref": "#/definitions/JobProtocol", "definitions": definitions}


def _int(minimum: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "maximum": INT64_MAX}


# README "stricter" list, items 2-5 as schema constraints (items 1 and 6 are applied by `_generated`
# and `_repair`). They are added to OpenPAI's schema with allOf, so they can only narrow it.
RESTRICTIONS: dict[str, Any] = {
    "properties": {
        "jobRetryCount": _int(0),
        "taskRoles": {
            # 2. task role names and port labels are C identifiers; 3. at least one task role.
            "minProperties": 1,
            "propertyNames": {"pattern": ROLE_NAME},
            "additionalProperties": {
                "properties": {
                    "instances": _int(1),
                    "taskRetryCount": _int(0),
                    # 4. completion counts are -1 or at least 1 (0 and null mean the default).
                    "completion": {
                        "properties": {
                            "minFailedInstances": _int(-1),
                            "minSucceededInstances": _int(-1),
                        }
                    },
                    "extraContainerOptions": {"properties": {"shmMB": _int(0)}},
                    # 4. cpu and memoryMB are required; resources are not negative.
                    "resourcePerInstance": {
                        "required": ["cpu", "memoryMB"],
                        "properties": {
                            "cpu": _int(0),
                            "memoryMB": _int(0),
                            "gpu": _int(0),
                            "ports": {
                                "propertyNames": {"pattern": ROLE_NAME},
                                "additionalProperties": _int(0),
                            },
                        },
                    },
                }
            },
        },
        # 6. the extras this platform acts on have types.
        "extras": {
            "properties": {
                "gangAllocation": {"type": "boolean"},
                "submitFrom": {"type": "string"},
                "hivedScheduler": {
                    "type": "object",
                    "properties": {
                        "gangReleaseEnable": {"type": "boolean"},
                        "lazyPreemptionEnable": {"type": "boolean"},
                        "ignoreK8sSuggestedNodes": {"type": "boolean"},
                        "taskRoles": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "properties": {
                                    "skuType": {"type": "string", "pattern": r"^[\w.-]+(\|[\w.-]+)*$"},
                                    "skuNumber": _int(1),
                                    "pinnedCellId": {"type": "string", "minLength": 1},
                                    "affinityGroupName": {"type": "string"},
                                    "gpuMemoryMB": _int(0),
                                },
                            },
                        },
                    },
                },
                "com.microsoft.pai.runtimeplugin": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["plugin"],
                        "properties": {
                            "plugin": {"type": "string", "minLength": 1},
                            "parameters": {"type": ["object", "null"]},
                            "failurePolicy": {"enum": ["ignore", "fail"]},
                            "taskroles": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
                "storages": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "mountPath": {"type": "string", "minLength": 1},
                        },
                    },
                },
                "jobStatusChangeNotification": {
                    "type": "object",
                    "additionalProperties": {"type": "boolean"},
                },
                # This platform's own grace period (README "stricter" item 6).
                "preemption": {
                    "type": "object",
                    "properties": {"graceSeconds": {"type": "number", "minimum": 0, "maximum": 86400}},
                    "additionalProperties": False,
                },
                # This platform's own dependencies and elastic roles name other jobs and this job's
                # roles, which a generator cannot draw at random; their own tests cover them. Here
                # they are never generated, and random extra keys do not take their names.
                "dependencies": False,
                "elastic": False,
            }
        },
    }
}


def _repair(doc: dict[str, Any]) -> dict[str, Any]:
    """README "stricter" item 5: references between sections must resolve, as OpenPAI's REST server
    checks them. Make a generated document's references do so, keeping it valid under OpenPAI's schema."""
    doc = copy.deepcopy(doc)
    named: dict[str, list[str]] = {"dockerimage": [], "script": [], "output": [], "data": []}
    kept = []
    for item in doc.get("prerequisites", []):
        name = item.get("name")
        if name is not None and name in named[item["type"]]:
            continue  # duplicate names of one type are refused
        if name is not None:
            named[item["type"]].append(name)
        kept.append(item)
    if not named["dockerimage"]:
        kept.append({"name": "image", "type": "dockerimage", "uri": "busybox"})
        named["dockerimage"].append("image")
    doc["prerequisites"] = kept
    all_names = {name for names in named.values() for name in names}
    for role in doc["taskRoles"].values():
        if role.get("dockerImage") not in named["dockerimage"]:
            role["dockerImage"] = named["dockerimage"][0]
        for kind in ("data", "output", "script"):
            if kind in role and role[kind] not in named[kind]:
                if named[kind]:
                    role[kind] = named[kind][0]
                else:
                    del role[kind]
        if "prerequisites" in role:
            role["prerequisites"] = [ref for ref in role["prerequisites"] if ref in all_names]
    deployments: list[dict[str, Any]] = []
    for deployment in doc.get("deployments", []):
        if "name" in deployment and any(d.get("name") == deployment["name"] for d in deployments):
            continue
        hooks = deployment.get("taskRoles")
        if isinstance(hooks, dict):
            deployment["taskRoles"] = {r: h for r, h in hooks.items() if r in doc["taskRoles"]}
        deployments.append(deployment)
    if "deployments" in doc:
        doc["deployments"] = deployments
    defaults = doc.get("defaults")
    if isinstance(defaults, dict) and defaults.get("deployment"):
        if not any(d.get("name") == defaults["deployment"] for d in deployments):
            del defaults["deployment"]
    hived = (doc.get("extras") or {}).get("hivedScheduler")
    if isinstance(hived, dict) and isinstance(hived.get("taskRoles"), dict):
        hived["taskRoles"] = {r: v for r, v in hived["taskRoles"].items() if r in doc["taskRoles"]}
    # 7. At most MAX_TASKS task instances in all: each role's share, when the roles ask for more.
    roles = [r for r in doc["taskRoles"].values() if isinstance(r, dict)]
    if sum(r.get("instances", 1) for r in roles) > MAX_TASKS:
        share = max(1, MAX_TASKS // len(roles))
        for role in roles:
            role["instances"] = min(role.get("instances", 1), share)
    return doc


def _size(value: Any, depth: int = 1) -> tuple[int, int]:
    """(nodes, depth) of a document, as the loader counts them."""
    if isinstance(value, dict):
        parts = [_size(k, depth + 1) for k in value] + [_size(v, depth + 1) for v in value.values()]
    elif isinstance(value, list):
        parts = [_size(v, depth + 1) for v in value]
    else:
        return 1, depth
    return 1 + sum(n for n, _ in parts), max([depth, *(d for _, d in parts)])


def _fits_the_stored_document(value: Any) -> bool:
    """README "stricter" item 1: what the loader and the stored document can hold."""
    if isinstance(value, dict):
        return all("\x00" not in k and _fits_the_stored_document(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_fits_the_stored_document(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return INT64_MIN <= value <= INT64_MAX
    return True


def _text(doc: dict[str, Any]) -> str:
    # Non-ASCII escaped: PyYAML writes some characters (NEL, U+0085) raw that YAML reads as line breaks.
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=False)


OPENPAI = openpai_schema()
OPENPAI_VALIDATOR = Draft7Validator(OPENPAI)
GENERATED = {"allOf": [OPENPAI, RESTRICTIONS], "definitions": OPENPAI["definitions"]}


def _assert_accepted_and_kept(doc: dict[str, Any]) -> None:
    parsed = parse_job(_text(doc), "alice", NOW)
    assert parsed.spec.name == doc["name"]
    assert parsed.raw == doc
    without_secrets = {k: v for k, v in doc.items() if k != "secrets"}
    assert {k: v for k, v in parsed.masked.items() if k != "secrets"} == without_secrets


def test_the_schema_copy_is_valid_json_schema() -> None:
    Draft7Validator.check_schema(OPENPAI)
    Draft7Validator.check_schema(GENERATED)


def test_the_schema_copy_is_the_reference_one() -> None:
    reference = REFERENCE / "protocol-v2-schema.yaml"
    if not reference.exists():
        pytest.skip(f"extra check not run: {reference} is absent (the in-repo copy is used)")
    assert SCHEMA_COPY.read_bytes() == reference.read_bytes()


def _schema_examples() -> dict[str, Any]:
    """A job assembled from the examples OpenPAI's schema gives for each JobProtocol field."""
    components = yaml.safe_load(SCHEMA_COPY.read_text())["components"]["schemas"]
    fields = components["JobProtocol"]["allOf"][1]["properties"]
    info = components["PrerequisiteInfo"]["properties"]
    doc: dict[str, Any] = {key: spec["example"] for key, spec in info.items() if "example" in spec}
    doc.update({key: spec["example"] for key, spec in fields.items() if "example" in spec})
    doc["extras"] = {
        key: spec["example"] for key, spec in fields["extras"]["properties"].items() if "example" in spec
    }
    return doc


def test_openpai_schema_example_job_is_accepted() -> None:
    """The marketplace-style prerequisites (protocolVersion, version, contributor, description) of the
    schema's own example, its task roles, deployments, defaults and extras."""
    doc = _schema_examples()
    assert not list(OPENPAI_VALIDATOR.iter_errors(doc))
    assert {"protocolVersion", "version", "contributor", "description"} <= set(doc["prerequisites"][0])
    _assert_accepted_and_kept(doc)


def test_openpai_sdk_test_job_is_accepted() -> None:
    """The job OpenPAI's JavaScript SDK submits in its own API tests (`tests/common/test_data`)."""
    doc = {
        "contributor": "OpenPAI",
        "description": "# Serving a TensorFlow MNIST Digit Recognition Model\n",
        "name": "sdk_test_job",
        "parameters": {"modelPath": "/tmp/mnist_model"},
        "prerequisites": [
            {
                "contributor": "OpenPAI",
                "description": "This is an example TensorFlow Serving Docker image.\n",
                "name": "tf_serving_example",
                "protocolVersion": 2,
                "type": "dockerimage",
                "uri": "openpai/pai.example.tensorflow-serving",
                "version": "1.0-r1.4",
            }
        ],
        "protocolVersion": 2,
        "taskRoles": {
            "worker": {
                "commands": ["serve <% $parameters.modelPath %>"],
                "dockerImage": "tf_serving_example",
                "instances": 1,
                "resourcePerInstance": {"cpu": 4, "gpu": 1, "memoryMB": 8192, "ports": {"model_server": 1}},
            }
        },
        "type": "job",
        "version": "1.0",
    }
    assert not list(OPENPAI_VALIDATOR.iter_errors(doc))
    _assert_accepted_and_kept(doc)


@pytest.mark.parametrize(
    "path",
    sorted((REFERENCE / "examples").glob("*.yaml")) if (REFERENCE / "examples").is_dir() else [],
    ids=lambda p: p.name,
)
def test_reference_example_is_accepted_and_kept(path: Path) -> None:
    """OpenPAI's example jobs (some, such as `skuType: null`, pass its server but not its schema)."""
    text = path.read_text()
    parsed = parse_job(text, "alice", NOW)
    assert parsed.raw == yaml.safe_load(text)


def test_reference_examples_ran_or_said_why() -> None:
    if not (REFERENCE / "examples").is_dir():
        pytest.skip(f"extra check not run: {REFERENCE / 'examples'} is absent")
    assert len(list((REFERENCE / "examples").glob("*.yaml"))) >= 10


@st.composite
def _openpai_jobs(draw: st.DrawFn) -> dict[str, Any]:
    doc = draw(from_schema(GENERATED, OPENPAI))
    assume(isinstance(doc, dict) and isinstance(doc.get("taskRoles"), dict))
    doc = _repair(doc)
    # Generated from OpenPAI's schema narrowed by RESTRICTIONS; still valid for both after the repair.
    assert not [e.message for e in OPENPAI_VALIDATOR.iter_errors(doc)], json.dumps(doc)[:2000]
    nodes, depth = _size(doc)
    assume(_fits_the_stored_document(doc) and nodes <= MAX_NODES and depth < MAX_DEPTH)
    assume(len(_text(doc).encode()) <= MAX_BODY_BYTES)
    assume(len(doc["taskRoles"]) <= MAX_TASKS)  # item 7 with a task per role
    return doc


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
@given(_openpai_jobs())
def test_documents_valid_for_openpai_are_accepted_and_kept(doc: dict[str, Any]) -> None:
    _assert_accepted_and_kept(doc)
