"""The exit spec: loading, validating and indexing it. Pure apart from reading the packaged files.

A spec is refused as a whole, with every problem named, unless it passes the JSON Schema, has unique codes
and phrases, and every regex compiles under RE2 within the size limits (see ``regex``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import yaml

from pai_common.errors import InvalidParametersError
from pai_diagnosis.regex import Pattern, PatternSet, RegexError, compile_safe

DATA_PACKAGE = "pai_diagnosis.spec_data"
SPEC_FILE = "exit-spec.yaml"
SCHEMA_FILE = "exit-spec.schema.json"
MAX_SPEC_BYTES = 1 << 20
# The fields of an entry that OpenPAI's API shows as appExitSpec (the patterns stay inside the service).
API_FIELDS = (
    "code",
    "phrase",
    "issuer",
    "causer",
    "type",
    "stage",
    "behavior",
    "reaction",
    "reason",
    "repro",
    "solution",
)
SUCCESS_CODE = 0
UNKNOWN_USER_FAILURE_CODE = 255
UNDEFINED_POSITIVE_CODE = 256
UNDEFINED_NEGATIVE_CODE = -8000
# The matcher falls back on these; a spec without them is refused.
REQUIRED_CODES = (SUCCESS_CODE, UNKNOWN_USER_FAILURE_CODE, UNDEFINED_POSITIVE_CODE, UNDEFINED_NEGATIVE_CODE)


@dataclass(frozen=True)
class GpuCondition:
    double_ecc: bool | None = None
    xids: frozenset[int] | None = None


@dataclass(frozen=True)
class RuntimePattern:
    exit_code: int | None = None
    user_log: Pattern | None = None
    platform_log: Pattern | None = None
    gpu: GpuCondition | None = None


@dataclass(frozen=True)
class ContainerPattern:
    name: Pattern | None = None
    reason: Pattern | None = None
    message: Pattern | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class PodPattern:
    reason: Pattern | None = None
    message: Pattern | None = None
    containers: tuple[ContainerPattern, ...] = ()


@dataclass(frozen=True)
class SpecEntry:
    code: int
    phrase: str
    fields: dict[str, Any]  # the API fields, as written in the spec (defaults filled in)
    runtime_patterns: tuple[RuntimePattern, ...] = ()
    pod_patterns: tuple[PodPattern, ...] = ()

    @property
    def reason(self) -> str:
        return str(self.fields.get("reason", ""))

    @property
    def solution(self) -> list[str]:
        return list(self.fields.get("solution", []))

    def api_view(self) -> dict[str, Any]:
        """The entry as OpenPAI's API shows it (appExitSpec)."""
        return {k: _copy(self.fields[k]) for k in API_FIELDS if k in self.fields}


@dataclass(frozen=True)
class ExitSpec:
    version: int
    entries: tuple[SpecEntry, ...]
    document: dict[str, Any]  # the validated document, for storing and showing

    def by_code(self, code: int) -> SpecEntry | None:
        return self._index().get(code)

    def log_patterns(self) -> PatternSet:
        """Every log pattern of the spec in one RE2 set, built on first use and kept."""
        found: PatternSet | None = self.__dict__.get("_log_patterns")
        if found is None:
            patterns = [
                p
                for e in self.entries
                for rp in e.runtime_patterns
                for p in (rp.user_log, rp.platform_log)
                if p is not None
            ]
            found = PatternSet(patterns)
            object.__setattr__(self, "_log_patterns", found)
        return found

    def _index(self) -> dict[int, SpecEntry]:
        # Built on first use and kept on the frozen instance.
        index: dict[int, SpecEntry] | None = self.__dict__.get("_by_code")
        if index is None:
            index = {e.code: e for e in self.entries}
            object.__setattr__(self, "_by_code", index)
        return index


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


# ---- loading ---------------------------------------------------------------------------------------------


def packaged_text(name: str) -> str:
    return resources.files(DATA_PACKAGE).joinpath(name).read_text(encoding="utf-8")


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(packaged_text(SCHEMA_FILE))
    return loaded


# libyaml's loader where PyYAML was built with it: the shipped spec (48 KB) took PyYAML's pure-Python
# parser 0.13 s of CPU at every start (it is read twice: aliases, then the document), libyaml 0.012 s.
# Uploaded specs keep the pure-Python loader, whose error messages the API answers with.
BUILTIN_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def builtin_spec() -> ExitSpec:
    """The spec shipped with the service (a copy of proto/exit-spec/exit-spec.yaml)."""
    return build_spec(parse_document(packaged_text(SPEC_FILE), BUILTIN_LOADER))


def parse_document(
    text: str, loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = yaml.SafeLoader
) -> dict[str, Any]:
    """YAML (or JSON, which is YAML) text to a document, refused precisely when it is not one."""
    if len(text.encode("utf-8")) > MAX_SPEC_BYTES:
        raise InvalidParametersError(f"exit spec exceeds {MAX_SPEC_BYTES} bytes")
    _check_shape(text)
    try:
        # Aliases could make a 1 MiB text expand into an exponentially large document; a spec needs none.
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=loader)):
            raise InvalidParametersError("exit spec must not use YAML aliases (*name)")
        document = yaml.load(text, Loader=loader)  # a safe loader (pure or libyaml's)
    except yaml.YAMLError as exc:
        raise InvalidParametersError(f"exit spec is not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise InvalidParametersError("exit spec is nested too deeply") from exc
    if not isinstance(document, dict):
        raise InvalidParametersError("exit spec must be a mapping with `version` and `spec`")
    return document


MAX_NESTING = 64
MAX_INDENT = 256


def _check_shape(text: str) -> None:
    """Refuse deep nesting before the YAML parser sees it: PyYAML's time grows faster than linearly
    with it, and a spec is a shallow document."""
    depth = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                raise InvalidParametersError(
                    f"exit spec is nested too deeply (more than {MAX_NESTING} levels)"
                )
        elif ch in "]}":
            depth = max(0, depth - 1)
    for number, line in enumerate(text.splitlines(), 1):
        if len(line) - len(line.lstrip(" \t")) > MAX_INDENT:
            raise InvalidParametersError(
                f"exit spec line {number} is indented more than {MAX_INDENT} columns"
            )


def parse_spec(text: str) -> ExitSpec:
    return build_spec(parse_document(text))


def build_spec(document: dict[str, Any], *, complete: bool = True) -> ExitSpec:
    """Validate a document fully and compile it; every problem is listed in one error.

    ``complete=False`` checks a part of a spec (an admin's overlay): it need not hold the fallback codes.
    """
    validator = jsonschema.Draft202012Validator(schema())
    problems = [
        f"{_where(err.absolute_path)}: {err.message}"
        for err in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if problems:
        raise InvalidParametersError("exit spec does not match its schema: " + "; ".join(problems[:20]))
    entries: list[SpecEntry] = []
    codes: dict[int, int] = {}
    phrases: dict[str, int] = {}
    for i, raw in enumerate(document["spec"]):
        where = f"spec[{i}] (code {raw['code']})"
        if raw["code"] in codes:
            problems.append(f"{where}: code repeats spec[{codes[raw['code']]}]")
        if raw["phrase"] in phrases:
            problems.append(f"{where}: phrase {raw['phrase']!r} repeats spec[{phrases[raw['phrase']]}]")
        codes.setdefault(raw["code"], i)
        phrases.setdefault(raw["phrase"], i)
        try:
            entries.append(_entry(raw))
        except RegexError as exc:
            problems.append(f"{where}: {exc}")
    missing = [c for c in REQUIRED_CODES if c not in codes] if complete else []
    problems.extend(f"code {c} is required (the matcher falls back on it)" for c in missing)
    if problems:
        raise InvalidParametersError("exit spec is invalid: " + "; ".join(problems[:20]))
    return ExitSpec(version=document["version"], entries=tuple(entries), document=document)


def _where(path: Any) -> str:
    parts = list(path)
    return "/".join(str(p) for p in parts) if parts else "(document)"


def _regex(raw: dict[str, Any], key: str, where: str) -> Pattern | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        return compile_safe(value)
    except RegexError as exc:
        raise RegexError(f"{where}.{key} {value!r}: {exc}") from exc


def _entry(raw: dict[str, Any]) -> SpecEntry:
    fields = {k: raw[k] for k in API_FIELDS if k in raw}
    fields.setdefault("repro", [])
    fields.setdefault("solution", [])
    pattern = raw.get("pattern", {})
    runtime = []
    for j, p in enumerate(pattern.get("runtimeContainerPatterns", [])):
        where = f"runtimeContainerPatterns[{j}]"
        gpu = None
        if "gpuInfo" in p:
            info = p["gpuInfo"]
            xids = info.get("xid")
            gpu = GpuCondition(
                double_ecc=info.get("nvidiaDoubleEccError"),
                xids=frozenset(xids) if xids is not None else None,
            )
        runtime.append(
            RuntimePattern(
                exit_code=p.get("exitCode"),
                user_log=_regex(p, "userLogRegex", where),
                platform_log=_regex(p, "platformLogRegex", where),
                gpu=gpu,
            )
        )
    pods = []
    for j, p in enumerate(pattern.get("controllerPodPatterns", [])):
        where = f"controllerPodPatterns[{j}]"
        containers = tuple(
            ContainerPattern(
                name=_regex(c, "nameRegex", f"{where}.containers[{k}]"),
                reason=_regex(c, "reasonRegex", f"{where}.containers[{k}]"),
                message=_regex(c, "messageRegex", f"{where}.containers[{k}]"),
                exit_code=c.get("exitCode"),
            )
            for k, c in enumerate(p.get("containers", []))
        )
        pods.append(
            PodPattern(
                reason=_regex(p, "reasonRegex", where),
                message=_regex(p, "messageRegex", where),
                containers=containers,
            )
        )
    return SpecEntry(
        code=raw["code"],
        phrase=raw["phrase"],
        fields=fields,
        runtime_patterns=tuple(runtime),
        pod_patterns=tuple(pods),
    )


# ---- admins' overlays --------------------------------------------------------------------------------------


def overlay(base: dict[str, Any], upload: dict[str, Any]) -> dict[str, Any]:
    """An upload's entries on top of a spec: same code replaces in place, a new code is added at the end.

    The upload must itself be a valid (partial) document; the result is validated again by the caller.
    """
    build_spec(upload, complete=False)
    by_code = {e["code"]: e for e in upload["spec"]}
    merged = [by_code.pop(e["code"], e) for e in base["spec"]]
    merged.extend(e for e in upload["spec"] if e["code"] in by_code)
    return {**base, "spec": merged}
