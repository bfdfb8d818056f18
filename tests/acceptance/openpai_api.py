"""Every response checked against OpenPAI's REST API swagger (a copy in ``openpai/``, see its README).

``SwaggerCheck.check(response)`` finds the swagger operation of the request (the `/rest-server` prefix
and a trailing slash do not matter) and validates the body against the schema documented for the
response's status. An error status the operation does not document must still be OpenPAI's error shape
(`Response`: `{code, message}`). A request no operation describes (this platform's additions, legacy
aliases) is recorded in ``unlisted``, so that a test can say which ones it expects. The swagger's job
protocol `$ref` points at this repository's own schema (``proto/job-protocol/``).

The amendments below are the only changes to OpenPAI's document; each says why.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import yaml
from jsonschema import Draft202012Validator
from openapi_schema_validator import OAS30Validator

ROOT = Path(__file__).resolve().parents[2]
SWAGGER = Path(__file__).parent / "openpai" / "rest-api-swagger.yaml"
PROTOCOL_SCHEMA = ROOT / "proto" / "job-protocol" / "protocol-v2.schema.json"
REFERENCE_SWAGGER = ROOT.parent / "shared" / "reference" / "openpai" / "rest-api-swagger.yaml"
PREFIX = "/rest-server"

# Codes OpenPAI's REST server answers with (src/utils/error.js users) that its swagger's `Response.code`
# enum leaves out, and the codes this platform adds (README: "Differences from OpenPAI").
EXTRA_ERROR_CODES = (
    "InvalidProtocolError",
    "NoTagError",
    "NoTaskLogError",
    "NoStorageError",
    "NoTaskError",
    "TooManyRequestsError",
    "PayloadTooLargeError",
    "ServiceUnavailableError",
    "ConflictGroupError",
)


def _amend(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    schemas = doc["components"]["schemas"]
    schemas["Response"]["properties"]["code"]["enum"] += list(EXTRA_ERROR_CODES)
    # OpenPAI's server sends containerGpus as an integer, the GPUs' bit mask (its frameworkConverter sums
    # 2^index over the pod's GPUs); its swagger says string. The server is what clients read.
    for path in _paths_to(doc, "containerGpus"):
        path.update({"type": "integer", "nullable": True})
    # OpenPAI's server answers a group's deletion with 200 (its group controller); its swagger says 201.
    group = doc["paths"]["/api/v2/groups/{group}"]["delete"]["responses"]
    group["200"] = group["201"]
    # The job protocol, which the swagger `$ref`s by URL, is this repository's own schema (checked apart).
    schemas["JobProtocol"] = {"type": "object"}
    return doc


def _paths_to(node: Any, name: str) -> list[dict[str, Any]]:
    """Every schema of a property called `name`, anywhere in the document."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        props = node.get("properties")
        if isinstance(props, dict) and isinstance(props.get(name), dict):
            found.append(props[name])
        for value in node.values():
            found += _paths_to(value, name)
    elif isinstance(node, list):
        for value in node:
            found += _paths_to(value, name)
    return found


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template.rstrip("/"))
    pattern = "".join("[^/]+?" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{pattern}$")


@dataclass
class Problem:
    method: str
    path: str
    status: int
    what: str

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status}: {self.what}"


@dataclass
class SwaggerCheck:
    """Validates responses; collects what is wrong and what the swagger does not describe."""

    problems: list[Problem] = field(default_factory=list)
    unlisted: set[tuple[str, str]] = field(default_factory=set)
    checked: int = 0
    operations_seen: set[tuple[str, str]] = field(default_factory=set)

    @cached_property
    def document(self) -> dict[str, Any]:
        return _amend(yaml.safe_load(SWAGGER.read_text()))

    @cached_property
    def _templates(self) -> list[tuple[re.Pattern[str], str, int]]:
        out = []
        for template in self.document["paths"]:
            literal = len(re.sub(r"\{[^}]+\}", "", template))
            out.append((_template_regex(template), template, literal))
        return out

    @cached_property
    def _protocol(self) -> Draft202012Validator:
        return Draft202012Validator(json.loads(PROTOCOL_SCHEMA.read_text()))

    def operation_of(self, method: str, path: str) -> tuple[str, dict[str, Any]] | None:
        path = path[len(PREFIX) :] if path.startswith(PREFIX + "/") else path
        path = path.rstrip("/") or "/"
        matches = [(literal, t) for rx, t, literal in self._templates if rx.match(path)]
        for _, template in sorted(matches, reverse=True):
            op = self.document["paths"][template].get(method.lower())
            if op is not None:
                return template, op
        return None

    def _resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def _validator(self, schema: dict[str, Any]) -> OAS30Validator:
        # The swagger's `#/components/...` references resolve against the validator's root schema.
        return OAS30Validator({"components": self.document["components"], "allOf": [schema]})

    def check(self, response: httpx.Response) -> None:
        request = response.request
        method, path, status = request.method, request.url.path, response.status_code
        found = self.operation_of(method, path)
        if found is None:
            self.unlisted.add((method, _shape(path)))
            if status >= 400:
                self._check_body(response, self.document["components"]["schemas"]["Response"], "Response")
            return
        template, op = found
        self.operations_seen.add((method, template))
        documented = op["responses"].get(str(status))
        if documented is None:
            if status < 400:
                self._problem(response, f"status {status} is not documented (only {sorted(op['responses'])})")
            else:
                self._check_body(response, self.document["components"]["schemas"]["Response"], "Response")
            return
        content = self._resolve(documented).get("content") or {}
        for media, spec in content.items():
            schema = spec.get("schema")
            if schema is None:
                continue
            if media == "text/yaml":
                self._check_protocol(response)
            else:
                self._check_body(response, schema, f"{template} {status}")

    def _check_body(self, response: httpx.Response, schema: dict[str, Any], name: str) -> None:
        self.checked += 1
        try:
            body = response.json()
        except ValueError:
            self._problem(response, f"the body is not JSON: {response.text[:200]!r}")
            return
        errors = sorted(self._validator(schema).iter_errors(body), key=lambda e: list(e.absolute_path))
        for error in errors[:5]:
            where = "/".join(str(p) for p in error.absolute_path) or "(body)"
            self._problem(response, f"{name}: at {where}: {error.message[:300]}")

    def _check_protocol(self, response: httpx.Response) -> None:
        """`/config`: a JSON body under a text/yaml header, as OpenPAI sends it; a valid protocol."""
        self.checked += 1
        try:
            body = yaml.safe_load(response.text)
        except yaml.YAMLError as exc:
            self._problem(response, f"the job config does not parse: {exc}")
            return
        for error in list(self._protocol.iter_errors(body))[:5]:
            self._problem(response, f"job config: {error.message[:300]}")

    def _problem(self, response: httpx.Response, what: str) -> None:
        request = response.request
        self.problems.append(Problem(request.method, request.url.path, response.status_code, what))

    def hook(self, response: httpx.Response) -> None:
        """An httpx response hook: reads and checks every response (streams excepted)."""
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return
        response.read()
        self.check(response)


def _shape(path: str) -> str:
    """A request path with its variable parts named, for the `unlisted` report."""
    path = path[len(PREFIX) :] if path.startswith(PREFIX + "/") else path
    path = re.sub(r"/jobs/[^/]+~[^/]+", "/jobs/{user}~{job}", path)
    return re.sub(
        r"/(users|groups|user|group|tokens|virtual-clusters)/(?!me\b|check\b)[^/]+", r"/\1/{name}", path
    )
