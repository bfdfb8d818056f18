"""Checks a manifest against the Kubernetes API schema that the official client is generated from.

Offline: the client's model classes carry the OpenAPI schema of every object (``openapi_types``: each
field's type, ``attribute_map``: its JSON name) and check required fields and enumerations when built.
A manifest passes when every key is a field of its object, every value has the field's type, and the
client can build the object from it.
"""

from __future__ import annotations

import re
from typing import Any

import kubernetes.client as k8s_client
from kubernetes.client import ApiClient

_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
    "datetime": (str,),
    "date": (str,),
    "bytes": (str,),  # base64 in JSON
}


class ManifestError(ValueError):
    """A manifest the Kubernetes API would refuse; names every problem with its path."""


def _check(value: Any, type_name: str, path: str, problems: list[str]) -> None:
    if value is None:
        return
    # Client versions spell containers "list[T]"/"dict(str, T)" or "List[T]"/"Dict[str, T]".
    if list_match := re.fullmatch(r"[lL]ist\[(.+)\]", type_name):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check(item, list_match.group(1), f"{path}[{i}]", problems)
        return
    if dict_match := re.fullmatch(r"dict\(([^,]+), (.+)\)|Dict\[([^,]+), (.+)\]", type_name):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return
        for k, item in value.items():
            _check(item, dict_match.group(2) or dict_match.group(4), f"{path}.{k}", problems)
        return
    if type_name in _PRIMITIVES:
        allowed = _PRIMITIVES[type_name]
        wrong_bool = isinstance(value, bool) and type_name in ("int", "float", "str")
        if wrong_bool or not isinstance(value, allowed):
            problems.append(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return
    model = getattr(k8s_client, type_name, None)
    if model is None:
        problems.append(f"{path}: unknown schema type {type_name}")
        return
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a {type_name} mapping, got {type(value).__name__}")
        return
    by_json = {json_name: attr for attr, json_name in model.attribute_map.items()}
    for key, item in value.items():
        attr = by_json.get(key)
        if attr is None:
            problems.append(f"{path}.{key}: not a field of {type_name}")
            continue
        _check(item, model.openapi_types[attr], f"{path}.{key}", problems)


def validate(manifest: dict[str, Any]) -> Any:
    """The client's model object of ``manifest`` (V1Pod, V1Secret, …); ManifestError when invalid."""
    kind = manifest.get("kind")
    if manifest.get("apiVersion") != "v1" or not isinstance(kind, str):
        raise ManifestError("only core v1 objects with apiVersion and kind are checked here")
    type_name = f"V1{kind}"
    problems: list[str] = []
    _check(manifest, type_name, kind, problems)
    if problems:
        raise ManifestError("; ".join(problems))
    try:
        # The generated models refuse missing required fields and values outside their enumerations.
        return ApiClient()._ApiClient__deserialize(manifest, type_name)  # type: ignore[attr-defined]
    except ValueError as exc:
        raise ManifestError(f"{kind}: {exc}") from exc
