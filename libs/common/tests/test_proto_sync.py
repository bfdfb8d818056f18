"""proto/ is generated from the contract models and must never drift from them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pai_common.contract import generate
from pai_common.contract.base import Command, Event, Message, RpcRequest, event_subject
from pai_common.contract.commands import ALL_COMMANDS
from pai_common.contract.events import ALL_EVENTS
from pai_common.contract.rpc import ALL_RPCS

REPO = generate.find_repo_root(Path(__file__).resolve().parent)
PROTO = REPO / "proto"
REGENERATE = "run `python -m pai_common.contract.generate` and commit proto/"

# Every body model with the file its schema lives in.
MODELS: list[tuple[str, type[Message]]] = [
    *((generate.event_path(e), e) for e in ALL_EVENTS),
    *((generate.command_path(c), c) for c in ALL_COMMANDS),
    *((generate.rpc_request_path(r), r) for r in ALL_RPCS),
    *((generate.rpc_reply_path(r), r.REPLY) for r in ALL_RPCS),
]


def load_schema(path: str) -> dict[str, Any]:
    file = PROTO / path
    assert file.is_file(), f"proto/{path} is missing; {REGENERATE}"
    schema: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    return schema


def load_asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((PROTO / generate.ASYNCAPI_FILE).read_text(encoding="utf-8"))
    return document


# ---- in sync -------------------------------------------------------------------------------------------


def test_proto_matches_the_models() -> None:
    problems = generate.diff(generate.render(), generate.files_on_disk(PROTO))
    assert not problems, "proto/ is out of date with pai_common.contract:\n  " + "\n  ".join(
        [*problems, REGENERATE]
    )


def test_render_is_deterministic() -> None:
    assert generate.render() == generate.render()
    assert (
        json.loads(generate.render()["events/job.submitted.json"])
        == generate.json_schemas()["events/job.submitted.json"]
    )


def test_every_model_has_a_schema_file_of_its_own() -> None:
    paths = [path for path, _ in MODELS]
    assert len(paths) == len(set(paths)), "two models would share one schema file"
    expected = set(paths) | {generate.ASYNCAPI_FILE}
    assert set(generate.render()) == expected
    for path, model in MODELS:
        schema = load_schema(path)
        assert schema["title"] == model.__name__
        assert schema["$id"] == generate.SCHEMA_ID_PREFIX + path
        assert schema["description"]


def test_check_mode_reports_missing_changed_and_extra_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "proto"
    assert generate.main(["--out", str(out)]) == 0
    assert generate.main(["--check", "--out", str(out)]) == 0

    # Hand-written files are not generated and never count as extra.
    (out / "README.md").write_text("hand-written\n")
    (out / "job-protocol").mkdir()
    (out / "job-protocol" / "v2.schema.json").write_text("{}\n")
    assert generate.main(["--check", "--out", str(out)]) == 0

    (out / "events" / "job.submitted.json").write_text("{}\n")
    (out / "commands" / "runtime.kill.json").unlink()
    (out / "events" / "job.vanished.json").write_text("{}\n")
    capsys.readouterr()
    assert generate.main(["--check", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "differs: events/job.submitted.json" in err
    assert "missing: commands/runtime.kill.json" in err
    assert "extra: events/job.vanished.json" in err
    assert "python -m pai_common.contract.generate" in err

    # Generating again repairs everything and keeps the hand-written files.
    assert generate.main(["--out", str(out)]) == 0
    assert generate.main(["--check", "--out", str(out)]) == 0
    assert not (out / "events" / "job.vanished.json").exists()
    assert (out / "README.md").read_text() == "hand-written\n"
    assert (out / "job-protocol" / "v2.schema.json").exists()


def test_readme_is_there() -> None:
    text = (PROTO / "README.md").read_text(encoding="utf-8").lower()
    for word in (
        "ce-type",
        "traceparent",
        "at least once",
        "idempotent",
        "pai.dlq",
        "asyncapi.yaml",
        "job-protocol",
    ):
        assert word in text, word


# ---- the schemas describe the messages -----------------------------------------------------------------


def _pick_string(schema: dict[str, Any]) -> str:
    if "pattern" in schema:
        for candidate in ("alice", "a", "x-1", "0", "/"):
            if re.search(schema["pattern"], candidate):
                return candidate
        raise AssertionError(f"no example string matches {schema['pattern']!r}")
    value = "example"
    return value[: schema.get("maxLength", len(value))].ljust(schema.get("minLength", 0), "x")


def example(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """A value for ``schema`` with every property filled in (the non-null branch of an optional)."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return example(root["$defs"][name], root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][-1]
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"] or schema["anyOf"]
        return example(branches[0], root)
    kind = schema.get("type")
    if kind == "object":
        if "properties" in schema:
            return {name: example(sub, root) for name, sub in schema["properties"].items()}
        values = schema.get("additionalProperties")
        return {"key": example(values, root) if isinstance(values, dict) and values else "value"}
    if kind == "array":
        return [example(schema.get("items", {}), root) for _ in range(max(1, schema.get("minItems", 0)))]
    if kind == "string":
        return _pick_string(schema)
    if kind == "integer":
        value = min(3, schema.get("maximum", 3))
        return max(value, schema.get("minimum", value))
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "anything"


def instances(path: str, model: type[Message]) -> list[Message]:
    """Real instances of the model: one with every field set, one with only the required ones."""
    full = model.model_validate(example(load_schema(path), load_schema(path)))
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    minimal = model.model_validate(full.model_dump(mode="json", include=required))
    return [full, minimal]


@pytest.mark.parametrize(("path", "model"), MODELS, ids=[path for path, _ in MODELS])
def test_schema_validates_real_messages(path: str, model: type[Message]) -> None:
    schema = load_schema(path)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for instance in instances(path, model):
        # What goes on the wire is the model's JSON, exactly as the bus encodes it.
        body = json.loads(instance.model_dump_json())
        errors = [e.message for e in validator.iter_errors(body)]
        assert not errors, f"{path} refuses a valid {model.__name__}: {errors}"


@pytest.mark.parametrize(("path", "model"), MODELS, ids=[path for path, _ in MODELS])
def test_schema_refuses_what_the_model_refuses(path: str, model: type[Message]) -> None:
    validator = jsonschema.Draft202012Validator(load_schema(path))
    body = json.loads(instances(path, model)[0].model_dump_json())
    assert not validator.is_valid({**body, "unexpected_field": 1}), "unknown fields must be refused"
    for name, field in model.model_fields.items():
        if field.is_required():
            incomplete = {k: v for k, v in body.items() if k != name}
            assert not validator.is_valid(incomplete), f"{path} accepts a body without {name}"


def test_schema_constraints_come_from_the_models() -> None:
    login = jsonschema.Draft202012Validator(load_schema("rpc/auth.login.request.json"))
    assert login.is_valid({"username": "alice", "password": "secret"})
    assert not login.is_valid({"username": "al ice", "password": "secret"})
    assert not login.is_valid({"username": "alice", "password": "secret", "expiration_s": 1})
    requested = jsonschema.Draft202012Validator(load_schema("events/scheduling.requested.json"))
    assert not requested.is_valid(
        {"job_key": "a~b", "attempt_id": 0, "virtual_cluster": "d", "priority": 1, "pods": []}
    )


# ---- metadata and the AsyncAPI document ----------------------------------------------------------------


@pytest.mark.parametrize("event", ALL_EVENTS, ids=[e.TYPE for e in ALL_EVENTS])
def test_event_schema_names_subject_producer_and_consumers(event: type[Event]) -> None:
    schema = load_schema(generate.event_path(event))
    assert schema["x-pai-subject"] == event_subject(event.TYPE)
    assert schema["x-pai-producer"] == event.PRODUCER
    assert schema["x-pai-consumers"] == list(event.CONSUMERS)
    assert schema["description"] == event.DESCRIPTION


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=[c.TYPE for c in ALL_COMMANDS])
def test_command_schema_is_addressed_per_node(command: type[Command]) -> None:
    schema = load_schema(generate.command_path(command))
    owner, verb = command.TYPE.split(".", 1)
    assert schema["x-pai-subject"] == f"pai.cmd.{owner}.{{node}}.{verb}"
    assert schema["x-pai-producer"] == command.PRODUCER
    assert schema["x-pai-consumers"] == [command.CONSUMER]


@pytest.mark.parametrize("rpc", ALL_RPCS, ids=[generate.rpc_name(r) for r in ALL_RPCS])
def test_rpc_schemas_name_their_subject(rpc: type[RpcRequest]) -> None:
    request = load_schema(generate.rpc_request_path(rpc))
    reply = load_schema(generate.rpc_reply_path(rpc))
    target = ".{node}" if rpc.SERVICE == "runtime" else ""
    assert (
        request["x-pai-subject"] == reply["x-pai-subject"] == f"pai.rpc.{rpc.SERVICE}{target}.{rpc.ENDPOINT}"
    )
    assert request["x-pai-consumers"] == [rpc.SERVICE]
    assert reply["x-pai-producer"] == rpc.SERVICE


def _operations(document: dict[str, Any], channel: str) -> list[tuple[str, str]]:
    return sorted(
        (op["x-pai-service"], op["action"])
        for op in document["operations"].values()
        if op["channel"]["$ref"] == f"#/channels/{channel}"
    )


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_asyncapi_names_every_event_with_producer_and_consumers() -> None:
    document = load_asyncapi()
    assert document["asyncapi"].startswith("3.")
    for event in ALL_EVENTS:
        channel = document["channels"][f"evt.{event.TYPE}"]
        assert channel["address"] == event_subject(event.TYPE)
        message = _resolve(document, channel["messages"][event.TYPE]["$ref"])
        assert message["name"] == event.TYPE
        assert message["x-pai-producer"] == event.PRODUCER
        assert message["x-pai-consumers"] == list(event.CONSUMERS)
        assert message["payload"]["$ref"] == generate.event_path(event)
        expected = sorted([(event.PRODUCER, "send"), *((c, "receive") for c in event.CONSUMERS)])
        assert _operations(document, f"evt.{event.TYPE}") == expected


def test_asyncapi_commands_and_rpcs() -> None:
    document = load_asyncapi()
    for command in ALL_COMMANDS:
        channel = document["channels"][f"cmd.{command.TYPE}"]
        assert "{node}" in channel["address"]
        assert set(channel["parameters"]) == {"node"}
        assert _operations(document, f"cmd.{command.TYPE}") == sorted(
            [(command.PRODUCER, "send"), (command.CONSUMER, "receive")]
        )
    for rpc in ALL_RPCS:
        name = generate.rpc_name(rpc)
        channel = document["channels"][f"rpc.{name}"]
        assert channel["address"] == generate.rpc_address(rpc)
        [operation] = [
            op for op in document["operations"].values() if op["channel"]["$ref"] == f"#/channels/rpc.{name}"
        ]
        assert operation["x-pai-service"] == rpc.SERVICE
        reply = _resolve(document, operation["reply"]["messages"][0]["$ref"])
        reply = _resolve(document, reply["$ref"])
        assert reply["payload"]["$ref"] == generate.rpc_reply_path(rpc)
    assert document["channels"]["rpc.runtime.logs"]["address"] == "pai.rpc.runtime.{node}.logs"
    assert document["channels"]["dlq"]["address"] == "pai.dlq.{service}.{durable}"


def test_asyncapi_references_resolve() -> None:
    document = load_asyncapi()
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    for ref in refs:
        if ref.startswith("#/"):
            _resolve(document, ref)
        else:
            assert (PROTO / ref).is_file(), f"asyncapi.yaml points at a missing file {ref}"
    for trait in ("cloudEvents", "traceContext"):
        assert trait in document["components"]["messageTraits"]
    headers = document["components"]["messageTraits"]["cloudEvents"]["headers"]["properties"]
    assert {"ce-id", "ce-source", "ce-type", "ce-subject", "ce-time", "ce-specversion", "Nats-Msg-Id"} <= set(
        headers
    )
