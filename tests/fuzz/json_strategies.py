"""Hypothesis strategies for message bodies, read from the published contract in ``proto/``.

``valid(schema)`` draws bodies the schema accepts (the subset of JSON Schema the generator writes: $ref,
$defs, type, properties, required, additionalProperties, items, minItems, anyOf, enum, minimum, maximum,
minLength, maxLength, pattern), leaning to the edges: empty and long strings, zero, negative and huge
numbers, empty and several-item lists. ``anything()`` draws any JSON value, and ``mutated`` breaks a valid
body in one place (a missing required field, a wrong type, an unknown field).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

PROTO = Path(__file__).resolve().parents[2] / "proto"
# Big enough to be huge, small enough for one message: boundaries where int32/int64/float handling breaks.
EDGE_INTS = [0, 1, -1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63)]
MAX_ITEMS = 3


def contract() -> dict[str, dict[str, Any]]:
    """Every event and command schema of proto/, by message type."""
    found = {}
    for folder in ("events", "commands"):
        for path in sorted((PROTO / folder).glob("*.json")):
            schema = json.loads(path.read_text())
            found[schema["x-pai-type"]] = schema
    return found


def anything() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
        max_leaves=12,
    )


def _strings(node: dict[str, Any]) -> st.SearchStrategy[str]:
    if "pattern" in node:
        return st.from_regex(node["pattern"], fullmatch=True).filter(
            lambda s: node.get("minLength", 0) <= len(s) <= node.get("maxLength", 10**9)
        )
    low = node.get("minLength", 0)
    high = node.get("maxLength")
    short = st.text(min_size=low, max_size=min(high, low + 24) if high is not None else low + 24)
    if high is not None and high <= low + 24:
        return short
    longest = high if high is not None else 5000
    return short | st.just("x" * longest) | st.text(alphabet="\x00\n\r\t\u202e\ufffd/.~$*>", min_size=low)


def _integers(node: dict[str, Any]) -> st.SearchStrategy[int]:
    low, high = node.get("minimum"), node.get("maximum")
    edges = [i for i in EDGE_INTS if (low is None or i >= low) and (high is None or i <= high)]
    near = st.integers(
        min_value=low if low is not None else -8, max_value=high if high is not None else (low or 0) + 64
    )
    return near | st.sampled_from(edges) if edges else near


def valid(schema: dict[str, Any], node: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    node = schema if node is None else node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return st.deferred(lambda: valid(schema, schema["$defs"][name]))
    if "anyOf" in node:
        return st.one_of([valid(schema, choice) for choice in node["anyOf"]])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if "const" in node:
        return st.just(node["const"])
    kind = node.get("type")
    if kind == "object":
        return _objects(schema, node)
    if kind == "array":
        items = valid(schema, node.get("items", {}))
        low = node.get("minItems", 0)
        return st.lists(items, min_size=low, max_size=max(low, node.get("maxItems", low + MAX_ITEMS)))
    if kind == "string":
        return _strings(node)
    if kind == "integer":
        return _integers(node)
    if kind == "number":
        floats = st.floats(
            min_value=node.get("minimum"),
            max_value=node.get("maximum"),
            allow_nan=False,
            allow_infinity=False,
        )
        return floats | _integers(node)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return anything()


def _objects(schema: dict[str, Any], node: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties: dict[str, Any] = node.get("properties", {})
    required = set(node.get("required", []))
    extra = node.get("additionalProperties", True)
    if not properties:
        values = valid(schema, extra) if isinstance(extra, dict) else anything()
        return st.dictionaries(st.text(max_size=16), values, max_size=MAX_ITEMS)
    fixed = {k: valid(schema, v) for k, v in properties.items() if k in required}
    optional = {k: valid(schema, v) for k, v in properties.items() if k not in required}
    return st.fixed_dictionaries(fixed, optional=optional)


def mutated(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A valid body broken in one way the consumer's model must refuse."""

    def breaks(body: Any, how: str, key: str, value: Any) -> Any:
        if not isinstance(body, dict) or not body:
            return value
        body = dict(body)
        name = key if key in body else sorted(body)[0]
        if how == "drop" and name in schema.get("required", []):
            body.pop(name)
        elif how == "retype":
            body[name] = value
        else:
            body[f"unknown_{key}"] = value
        return body

    return st.builds(
        breaks,
        valid(schema),
        st.sampled_from(["drop", "retype", "add"]),
        st.text(min_size=1, max_size=8),
        st.sampled_from([None, [], {}, "text", -1, 1.5, True]),
    )
