"""The JSON Schema of protocol v2 (proto/job-protocol/protocol-v2.schema.json, packaged here as a copy a
test keeps identical) and its errors as ``(field, message)`` pairs that say which field and why.

Pure: the schema is read once at import; checking a document does no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

SCHEMA_FILE: Final = "protocol_v2.schema.json"

SCHEMA: Final[dict[str, Any]] = json.loads(resources.files("pai_jobs").joinpath(SCHEMA_FILE).read_text())
_VALIDATOR: Final = Draft202012Validator(SCHEMA)

_TYPE_NAMES: Final = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}


def _path(parts: Any) -> str:
    return ".".join(str(p) for p in parts)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _shown(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}" if len(value) <= 40 else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _choice(value: object) -> str:
    return repr(value) if isinstance(value, str) and value.isdigit() else str(value)


def _describe(error: ValidationError) -> Iterator[tuple[str, str]]:
    """One schema error in the words the protocol's own checks use."""
    path = _path(error.absolute_path)
    kind = error.validator
    value: Any = error.validator_value
    instance = error.instance
    if "propertyNames" in error.absolute_schema_path:
        # A key of a mapping broke the rule for names: the error's instance is the key itself.
        if kind == "pattern":
            yield _join(path, str(instance)), f"name must match {value}"
        else:
            yield _join(path, str(instance)), f"is not a valid name: {error.message}"
    elif kind == "required":
        for key in value:
            if isinstance(instance, dict) and key not in instance:
                yield _join(path, key), "is required"
    elif kind == "additionalProperties" and value is False:
        allowed = set(error.schema.get("properties", {}))
        for key in sorted(k for k in instance if k not in allowed):
            yield _join(path, str(key)), "is not a field of protocol v2"
    elif kind == "type":
        kinds = [value] if isinstance(value, str) else list(value)
        wanted = " or ".join(_TYPE_NAMES.get(k, k) for k in kinds)
        yield path, f"must be {wanted}, got {_shown(instance)}"
    elif kind == "enum":
        yield path, f"must be one of {', '.join(_choice(v) for v in value)}, got {_shown(instance)}"
    elif kind == "const":
        yield path, f"must be {value!r}, got {_shown(instance)}"
    elif kind == "pattern":
        yield path, f"must match {value}"
    elif kind in ("minimum", "maximum"):
        word = "at least" if kind == "minimum" else "at most"
        yield path, f"must be {word} {value}, got {instance}"
    elif kind in ("minLength", "maxLength"):
        if kind == "minLength" and value == 1:
            yield path, "must be a non-empty string"
        else:
            word = "at least" if kind == "minLength" else "at most"
            yield path, f"must be {word} {value} characters, got {len(instance)}"
    elif kind == "minItems":
        yield path, f"must have at least {value} item{'s' if value != 1 else ''}"
    elif kind == "minProperties":
        yield path, f"must have at least {value} entr{'ies' if value != 1 else 'y'}"
    else:
        yield path, error.message


def schema_problems(doc: object) -> list[tuple[str, str]]:
    """Every place where ``doc`` breaks the schema, as (dotted field path, message), in document order."""
    problems: list[tuple[str, str]] = []
    for error in _VALIDATOR.iter_errors(doc):
        problems.extend(_describe(error))
    return problems
