"""Job protocol v2: parse, check and render a submitted YAML into a :class:`JobSpec`.

Pure: no I/O, no clock (the caller passes ``now_ms``), deterministic. Every problem found in a document is
collected and reported at once, as OpenPAI does with ajv's ``allErrors``: the error message is a JSON array
(encoded as a string) of ``{"field": "<dotted path>", "message": "..."}`` items.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from pai_common.contract.types import JobSpec, TaskRoleSpec
from pai_common.errors import InvalidProtocolError, PayloadTooLargeError
from pai_jobs import dependencies, elastic, preemption
from pai_jobs.schema import schema_problems

# Limits on what a submitted document may cost to parse.
MAX_BODY_BYTES: Final = 256 * 1024
# Nodes counted *expanded*: a node reached through N aliases counts N times, which is what defeats
# "billion laughs" documents (a few hundred composed nodes that expand into billions).
MAX_NODES: Final = 10_000
# The composer recurses once per nesting level; refuse deep documents before Python's recursion limit.
MAX_DEPTH: Final = 64
# At most this many problems are listed, so that a hostile document cannot produce a huge message.
MAX_PROBLEMS: Final = 100
# At most this many task instances in a job (all roles; an elastic role counts its largest size). Every
# event of a job carries every task's status (about 360 bytes each) and a job's detail every task (about
# 790 bytes each), and the bus carries at most 1 MiB a message: a 1,000-task job's detail is about 790 KB.
# OpenPAI has no such number; it is stricter on purpose (README, "Stricter than OpenPAI").
MAX_TASKS: Final = 1000

# The stored document is BSON: its integers are 64-bit.
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

# The field name used for problems about the document as a whole.
ROOT_FIELD: Final = "(root)"

# HiveD priority classes, as OpenPAI maps extras.hivedScheduler.jobPriorityClass.
PRIORITY_BY_CLASS: Final[Mapping[str, int]] = {"crit": 120, "prod": 100, "test": 10, "oppo": -1}
DEFAULT_PRIORITY_CLASS: Final = "test"
DEFAULT_VIRTUAL_CLUSTER: Final = "default"
SECRET_MASK: Final = "******"
DEFAULT_SHM_MB: Final = 512
RUNTIME_PLUGIN_EXTRA: Final = "com.microsoft.pai.runtimeplugin"

_NAME_RE: Final = re.compile(r"^[a-zA-Z0-9_-]+$")
_TASK_ROLE_RE: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MAX_NAME_LENGTH: Final = 255

# Fields beyond the ones protocol v2 names (at the top level, in a task role, a prerequisite, `defaults`,
# a deployment) are accepted and kept in the stored config: OpenPAI's protocol schema allows them.
_PREREQUISITE_TYPES: Final = ("dockerimage", "script", "output", "data")

# `<% expression %>`; only expressions that look like a reference are rendered, anything else is kept.
_PLACEHOLDER_RE: Final = re.compile(r"<%(.*?)%>", re.DOTALL)
_REFERENCE_RE: Final = re.compile(r"^\$[A-Za-z_]\w*(?:\.[\w-]+|\[\d+\])*$")
_INDEX_RE: Final = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class ParsedJob:
    """A submitted job after validation and rendering."""

    spec: JobSpec
    # The document as parsed, secrets included; stored so that the job can be re-rendered.
    raw: dict[str, Any]
    # The document with every value under `secrets` replaced by SECRET_MASK; what `/config` returns.
    masked: dict[str, Any]


# ---- YAML loading ----------------------------------------------------------------------------------

_BOOL_TAG: Final = "tag:yaml.org,2002:bool"
_TIMESTAMP_TAG: Final = "tag:yaml.org,2002:timestamp"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


class _Bounds(Composer):
    """The composer of both loaders below: it bounds the cost of a document and refuses what js-yaml does.

    - Duplicate mapping keys are refused (js-yaml refuses them; PyYAML would keep the last silently).
    - The expanded node count and the nesting depth are bounded (see MAX_NODES, MAX_DEPTH).
    """

    _expanded_sizes: dict[int, int]
    _depth: int

    def _start_bounds(self) -> None:
        # id(node) -> the node's expanded size; a node is present once fully composed.
        self._expanded_sizes = {}
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        is_alias = self.check_event(AliasEvent)  # type: ignore[attr-defined]
        mark = self.peek_event().start_mark  # type: ignore[attr-defined]
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(
                    None, None, f"the document is nested deeper than {MAX_DEPTH} levels", mark
                )
            node: Node | None = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return None
        if is_alias:
            # The anchored node is still being composed: the alias refers to one of its own ancestors.
            if id(node) not in self._expanded_sizes:
                raise ComposerError(None, None, "recursive aliases are not allowed", mark)
            return node
        size = 1 + sum(self._expanded_sizes[id(child)] for child in _children(node))
        if size > MAX_NODES:
            raise ComposerError(
                None, None, f"the document expands to more than {MAX_NODES} nodes (aliases included)", mark
            )
        if isinstance(node, MappingNode):
            _refuse_duplicate_keys(node)
        self._expanded_sizes[id(node)] = size
        return node


# Scalars resolve the way OpenPAI (js-yaml) resolves them, in both loaders (they share this table):
# - only true/false are booleans (YAML 1.2, as js-yaml): with YAML 1.1 a command `- yes` or a parameter `on`
#   would silently become a boolean;
# - timestamps stay strings, so that the stored document is plain JSON.
_RESOLVERS: Final = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _TIMESTAMP_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "tTfF":
    _RESOLVERS.setdefault(_first, []).append(
        (_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"))
    )


class _GuardedLoader(Reader, Scanner, Parser, _Bounds, SafeConstructor, Resolver):
    """PyYAML's pure-Python reader, scanner and parser: the judge of every document, whose messages (with
    their line and column) are the ones a user is shown."""

    yaml_implicit_resolvers = _RESOLVERS

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)  # type: ignore[no-untyped-call]
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._start_bounds()


_FastLoader: type[_Bounds] | None = None
try:
    from yaml.cyaml import CParser  # type: ignore[attr-defined]
except ImportError:  # a PyYAML built without libyaml: the pure loader does it all
    pass
else:

    class _LibyamlLoader(_Bounds, CParser, SafeConstructor, Resolver):  # type: ignore[misc]
        """libyaml's scanner and parser (C, several times faster) under the same composer, bounds and
        resolvers: it builds the same document from the events of any document both parsers accept."""

        yaml_implicit_resolvers = _RESOLVERS

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._start_bounds()

    _FastLoader = _LibyamlLoader


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _refuse_duplicate_keys(node: MappingNode) -> None:
    seen: set[tuple[str, str]] = set()
    for key, _ in node.value:
        if key.tag == _MERGE_TAG or not isinstance(key.value, str):
            continue
        identity = (key.tag, key.value)
        if identity in seen:
            raise ComposerError(None, None, f"duplicate key {key.value!r}", key.start_mark)
        seen.add(identity)


def _load(yaml_text: str) -> object:
    """The document, read by libyaml where PyYAML has it. Anything libyaml refuses (or fails on, such as a
    lone surrogate it cannot encode) is read again by the pure loader, whose answer stands: a user sees its
    messages, never libyaml's. libyaml is more lenient in places (a tab after `key:`, as js-yaml)."""
    if _FastLoader is not None:
        try:
            return _load_with(_FastLoader, yaml_text)
        except Exception:  # whatever it is, the pure loader below judges the document
            pass
    return _load_with(_GuardedLoader, yaml_text)


def _load_with(loader_type: type[_Bounds], yaml_text: str) -> object:
    loader: Any = loader_type(yaml_text)  # type: ignore[call-arg]
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _yaml_error_message(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem is None:
        return f"invalid YAML: {exc}"
    context = getattr(exc, "context", None)
    text = f"{context}, {problem}" if context else str(problem)
    if mark is not None:
        text += f" (line {mark.line + 1}, column {mark.column + 1})"
    return f"invalid YAML: {text}"


# ---- problem collection ----------------------------------------------------------------------------


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append({"field": path or ROOT_FIELD, "message": message})

    def add_schema_problems(self, doc: object) -> None:
        """The JSON Schema's findings about fields the checks here have not already reported.

        A field (or a field inside or around it) with a problem of its own is skipped, so that one mistake
        is reported once, in the words of the check that knows the most about it.
        """
        reported = [item["field"] for item in self.items]

        def related(path: str) -> bool:
            return any(
                path == other or path.startswith(other + ".") or other.startswith(path + ".")
                for other in reported
            )

        for path, message in schema_problems(doc):
            if not related(path or ROOT_FIELD):
                self.add(path, message)
                reported.append(path or ROOT_FIELD)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = self.items[:MAX_PROBLEMS]
        if len(self.items) > MAX_PROBLEMS:
            shown.append({"field": ROOT_FIELD, "message": f"{len(self.items) - MAX_PROBLEMS} more problems"})
        raise InvalidProtocolError(json.dumps(shown))


def _invalid(path: str, message: str) -> InvalidProtocolError:
    """The error for one problem that stops the checks (the document cannot be read any further)."""
    return InvalidProtocolError(json.dumps([{"field": path, "message": message}]))


def _join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(value: object) -> str:
    """How a value reads in a message: its YAML kind, with the value when it is short."""
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


def _is_int(value: object) -> TypeGuard[int | float]:
    """A protocol integer: a YAML integer, or a number with no fraction (`2.0`: JavaScript, and so OpenPAI,
    does not tell them apart). YAML booleans are Python ints; a protocol integer never is one."""
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def _is_version_2(value: object) -> bool:
    # A YAML number 2 or 2.0 (JavaScript does not tell them apart) or the string "2"; never `true`.
    if isinstance(value, bool):
        return False
    return value == "2" or (isinstance(value, int | float) and value == 2)


def _check_plain_json(value: object, path: str, problems: _Problems) -> None:
    """Refuse what YAML can build but the stored document cannot hold: values of explicit tags that JSON
    has no type for, integers beyond 64 bits, strings that are not Unicode (lone surrogates from `\\ud800`
    escapes) and keys with a NUL character."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                problems.add(_join(path, str(key)), f"mapping keys must be strings, got {_kind(key)}")
                continue
            if "\x00" in key or not _is_unicode(key):
                problems.add(
                    _join(path, repr(key)[1:-1]), "a key must be Unicode text without NUL characters"
                )
                continue
            _check_plain_json(item, _join(path, key), problems)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_plain_json(item, _join(path, i), problems)
    elif isinstance(value, str):
        if not _is_unicode(value):
            problems.add(path, "must be Unicode text (it holds a lone surrogate)")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not INT64_MIN <= value <= INT64_MAX:
            problems.add(path, f"integers must fit in 64 bits, got {value}")
    elif value is not None and not isinstance(value, float | bool):
        problems.add(path, f"{type(value).__name__} values are not allowed")


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---- field readers: each checks one field, reports at its path, and returns None when it is unusable ---


def _get_int(
    problems: _Problems, obj: Mapping[str, object], key: str, path: str, *, default: int | None, minimum: int
) -> int | None:
    where = _join(path, key)
    if key not in obj:
        if default is None:
            problems.add(where, "is required")
        return default
    value = obj[key]
    if not _is_int(value):
        problems.add(where, f"must be an integer, got {_kind(value)}")
        return None
    if value < minimum:
        problems.add(where, f"must be at least {minimum}, got {int(value)}")
        return None
    return int(value)


def _get_gpu(problems: _Problems, resources: Mapping[str, object], path: str) -> tuple[int | None, int]:
    """resourcePerInstance.gpu: whole GPUs, or (beyond OpenPAI) a share of one GPU between 0 and 1."""
    value = resources.get("gpu", 0)
    if isinstance(value, float):
        if 0.001 <= value < 1:
            return 0, round(value * 1000)
        if value.is_integer() and value >= 0:
            return int(value), 0
        problems.add(
            _join(path, "gpu"), f"must be a whole number of GPUs or a share from 0.001 to 0.999, got {value}"
        )
        return None, 0
    return _get_int(problems, resources, "gpu", path, default=0, minimum=0), 0


def _get_str(
    problems: _Problems,
    obj: Mapping[str, object],
    key: str,
    path: str,
    *,
    required: bool,
    allow_empty: bool = False,
) -> str | None:
    where = _join(path, key)
    if key not in obj:
        if required:
            problems.add(where, "is required")
        return None
    value = obj[key]
    if not isinstance(value, str):
        problems.add(where, f"must be a {'' if allow_empty else 'non-empty '}string, got {_kind(value)}")
        return None
    if not value and not allow_empty:
        problems.add(where, f"must be a non-empty string, got {_kind(value)}")
        return None
    return value


def _get_mapping(
    problems: _Problems, obj: Mapping[str, object], key: str, path: str, *, required: bool = False
) -> dict[str, Any] | None:
    where = _join(path, key)
    if key not in obj:
        if required:
            problems.add(where, "is required")
        return None
    value = obj[key]
    if not isinstance(value, dict):
        problems.add(where, f"must be a mapping, got {_kind(value)}")
        return None
    return value


def _get_list(problems: _Problems, obj: Mapping[str, object], key: str, path: str) -> list[Any] | None:
    if key not in obj:
        return None
    value = obj[key]
    if not isinstance(value, list):
        problems.add(_join(path, key), f"must be a list, got {_kind(value)}")
        return None
    return value


def _get_str_list(
    problems: _Problems, obj: Mapping[str, object], key: str, path: str, *, required: bool, non_empty: bool
) -> list[str] | None:
    where = _join(path, key)
    if key not in obj:
        if required:
            problems.add(where, "is required")
        return None
    items = _get_list(problems, obj, key, path)
    if items is None:
        return None
    if non_empty and not items:
        problems.add(where, "must have at least one item")
        return None
    ok = True
    for i, item in enumerate(items):
        if not isinstance(item, str):
            problems.add(_join(where, i), f"must be a string, got {_kind(item)}")
            ok = False
    return items if ok else None


def _get_completion_count(
    problems: _Problems, completion: Mapping[str, object], key: str, path: str, *, default: int
) -> int | None:
    """A completion threshold; -1 disables it (None).

    Absent, null and 0 take the default, because OpenPAI builds the framework with `value || default`.
    """
    value = completion.get(key)
    if value is None or (_is_int(value) and value == 0):
        return default
    if not _is_int(value):
        problems.add(_join(path, key), f"must be an integer or null, got {_kind(value)}")
        return None
    if value == -1:
        return None
    if value < -1:
        problems.add(_join(path, key), f"must be -1 (disabled) or at least 1, got {int(value)}")
        return None
    return int(value)


# ---- validation ------------------------------------------------------------------------------------


@dataclass
class _Role:
    name: str
    instances: int
    cpu: int
    memory_mb: int
    gpu: int
    gpu_milli: int
    infiniband: bool
    commands: list[str]
    min_failed: int | None
    min_succeeded: int | None
    task_retry_count: int
    ports: dict[str, int] = field(default_factory=dict)
    shm_mb: int = DEFAULT_SHM_MB
    image: str | None = None
    # The prerequisites (by type: script, output, data) this role selects, for $script, $output and $data.
    selected: dict[str, dict[str, Any]] = field(default_factory=dict)


def _check_prerequisites(
    doc: Mapping[str, object], problems: _Problems
) -> dict[str, dict[str, dict[str, Any]]]:
    """Index the prerequisites by type, then name; report malformed and duplicate ones."""
    index: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in _PREREQUISITE_TYPES}
    items = _get_list(problems, doc, "prerequisites", "")
    for i, item in enumerate(items or []):
        path = _join("prerequisites", i)
        if not isinstance(item, dict):
            problems.add(path, f"must be a mapping, got {_kind(item)}")
            continue
        kind = item.get("type")
        if kind not in _PREREQUISITE_TYPES:
            problems.add(
                _join(path, "type"), f"must be one of {', '.join(_PREREQUISITE_TYPES)}, got {_kind(kind)}"
            )
            continue
        assert isinstance(kind, str)
        # OpenPAI's schema requires a name of every prerequisite but data (which is then never referenced).
        name = _get_str(problems, item, "name", path, required=kind != "data")
        if name is not None and not _NAME_RE.match(name):
            problems.add(_join(path, "name"), "must match ^[a-zA-Z0-9_-]+$")
            name = None
        elif name is not None and len(name) > _MAX_NAME_LENGTH:
            problems.add(
                _join(path, "name"), f"must be at most {_MAX_NAME_LENGTH} characters, got {len(name)}"
            )
            name = None
        if kind == "dockerimage":
            _get_str(problems, item, "uri", path, required=True, allow_empty=True)
            _get_mapping(problems, item, "auth", path)
        elif kind == "data":
            _get_str_list(problems, item, "uri", path, required=False, non_empty=True)
        elif "uri" in item:
            _get_str(problems, item, "uri", path, required=False, allow_empty=True)
        if name is None:
            continue
        if name in index[kind]:
            problems.add(_join(path, "name"), f"duplicate {kind} prerequisite name {name!r}")
            continue
        index[kind][name] = item
    return index


def _check_role(
    key: str,
    spec: Mapping[str, object],
    prerequisites: Mapping[str, Mapping[str, Mapping[str, Any]]],
    has_prerequisites: bool,
    check_references: bool,
    problems: _Problems,
) -> _Role | None:
    path = _join("taskRoles", key)
    before = len(problems.items)
    instances = _get_int(problems, spec, "instances", path, default=1, minimum=1)
    task_retry_count = _get_int(problems, spec, "taskRetryCount", path, default=0, minimum=0)
    # OpenPAI's schema allows an empty list: the task then runs its deployment's hooks, or nothing.
    commands = _get_str_list(problems, spec, "commands", path, required=True, non_empty=False)

    cpu = memory_mb = gpu = None
    gpu_milli = 0
    port_counts: dict[str, int] = {}
    shm_mb = DEFAULT_SHM_MB
    resources = _get_mapping(problems, spec, "resourcePerInstance", path, required=True)
    if resources is not None:
        res_path = _join(path, "resourcePerInstance")
        cpu = _get_int(problems, resources, "cpu", res_path, default=None, minimum=0)
        memory_mb = _get_int(problems, resources, "memoryMB", res_path, default=None, minimum=0)
        gpu, gpu_milli = _get_gpu(problems, resources, res_path)
        ports = _get_mapping(problems, resources, "ports", res_path)
        for label in ports or {}:
            if not _TASK_ROLE_RE.match(label):
                problems.add(
                    _join(_join(res_path, "ports"), label), "port label must match ^[a-zA-Z_][a-zA-Z0-9_]*$"
                )
            count = _get_int(problems, ports or {}, label, _join(res_path, "ports"), default=None, minimum=0)
            if count is not None:
                port_counts[label] = count

    min_failed: int | None = 1
    min_succeeded: int | None = instances
    completion = _get_mapping(problems, spec, "completion", path)
    if completion is not None:
        comp_path = _join(path, "completion")
        min_failed = _get_completion_count(problems, completion, "minFailedInstances", comp_path, default=1)
        min_succeeded = _get_completion_count(
            problems, completion, "minSucceededInstances", comp_path, default=instances or 1
        )

    infiniband = False
    extra = _get_mapping(problems, spec, "extraContainerOptions", path)
    if extra is not None:
        infiniband = extra.get("infiniband") is True
        extra_path = _join(path, "extraContainerOptions")
        if "shmMB" in extra:
            shm_mb = _get_int(problems, extra, "shmMB", extra_path, default=None, minimum=0) or 0
        if "infiniband" in extra and not isinstance(extra["infiniband"], bool):
            problems.add(
                _join(extra_path, "infiniband"), f"must be a boolean, got {_kind(extra['infiniband'])}"
            )

    docker_image = _get_str(problems, spec, "dockerImage", path, required=False)
    # Without any prerequisites the image is a plain name for the runtime; with them, OpenPAI resolves it.
    if (
        docker_image is not None
        and has_prerequisites
        and check_references
        and docker_image not in prerequisites["dockerimage"]
    ):
        problems.add(_join(path, "dockerImage"), f"names no dockerimage prerequisite: {docker_image!r}")
    image = docker_image
    if docker_image is not None and docker_image in prerequisites["dockerimage"]:
        uri = prerequisites["dockerimage"][docker_image].get("uri")
        image = uri if isinstance(uri, str) else None

    selected: dict[str, dict[str, Any]] = {}
    for kind in ("script", "output", "data"):
        ref = _get_str(problems, spec, kind, path, required=False)
        if ref is None:
            continue
        found = prerequisites[kind].get(ref)
        if found is not None:
            selected[kind] = dict(found)
        elif check_references:
            problems.add(_join(path, kind), f"names no {kind} prerequisite: {ref!r}")

    refs = _get_str_list(problems, spec, "prerequisites", path, required=False, non_empty=False)
    for i, ref in enumerate(refs or []):
        if check_references and not any(ref in by_name for by_name in prerequisites.values()):
            problems.add(_join(_join(path, "prerequisites"), i), f"names no prerequisite: {ref!r}")

    if len(problems.items) > before:
        return None
    assert instances is not None and task_retry_count is not None and commands is not None
    assert cpu is not None and memory_mb is not None and gpu is not None
    return _Role(
        name=key,
        instances=instances,
        cpu=cpu,
        memory_mb=memory_mb,
        gpu=gpu,
        gpu_milli=gpu_milli,
        infiniband=infiniband,
        commands=commands,
        min_failed=min_failed,
        min_succeeded=min_succeeded,
        task_retry_count=task_retry_count,
        ports=port_counts,
        shm_mb=shm_mb,
        image=image,
        selected=selected,
    )


def _check_deployments(
    doc: Mapping[str, object], role_names: set[str] | None, problems: _Problems
) -> dict[str, dict[str, Any]]:
    """Index the deployments by name: name -> {task role: {preCommands, postCommands}}.

    `role_names` is None when the job's task roles are themselves unusable: then references to them are
    not checked, so that one missing section does not also show up as a problem of every deployment.
    """
    index: dict[str, dict[str, Any]] = {}
    items = _get_list(problems, doc, "deployments", "")
    for i, item in enumerate(items or []):
        path = _join("deployments", i)
        if not isinstance(item, dict):
            problems.add(path, f"must be a mapping, got {_kind(item)}")
            continue
        # OpenPAI's schema does not require a name; a deployment without one can never be chosen.
        name = _get_str(problems, item, "name", path, required=False, allow_empty=True)
        roles = _get_mapping(problems, item, "taskRoles", path) or {}
        for role, hooks in roles.items():
            role_path = _join(_join(path, "taskRoles"), role)
            if role_names is not None and role not in role_names:
                problems.add(role_path, f"names no task role of the job: {role!r}")
                continue
            if not isinstance(hooks, dict):
                problems.add(role_path, f"must be a mapping, got {_kind(hooks)}")
                continue
            for hook in ("preCommands", "postCommands"):
                _get_str_list(problems, hooks, hook, role_path, required=False, non_empty=False)
        if name is None:
            continue
        if name in index:
            problems.add(_join(path, "name"), f"duplicate deployment name {name!r}")
            continue
        index[name] = roles
    return index


# ---- rendering -------------------------------------------------------------------------------------

_MISSING: Final = object()


def _format_value(value: object) -> str | None:
    """A value as text in an entrypoint, the way JavaScript would print it; None when it has no text form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # JavaScript has one number type: 1.0 prints as 1.
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [_format_value(item) for item in value]
        if any(part is None for part in parts):
            return None
        return ",".join(part for part in parts if part is not None)
    return None


def _lookup(expression: str, parameters: Mapping[str, Any] | None, selected: Mapping[str, Any]) -> object:
    parts = _INDEX_RE.sub(r".\1", expression).split(".")
    root = parts[0][1:]
    value: object
    if root == "parameters" and parameters is not None:
        value = parameters
    elif root in selected:
        if len(parts) == 1:
            # A bare `$script`, `$output` or `$data` stands for the prerequisite's uri.
            return selected[root].get("uri", _MISSING)
        value = selected[root]
    else:
        return _MISSING
    for part in parts[1:]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def _render(template: str, parameters: Mapping[str, Any] | None, selected: Mapping[str, Any]) -> str:
    """Substitute every `<% $ref %>` that resolves to a scalar (or a list of scalars).

    `$parameters.a.b` reads the job's parameters; `$script`, `$output` and `$data` the prerequisites the
    task role selects (`$data.uri[0]`, `$script.name` reach their fields). Anything else — an unknown
    reference, `$secrets` (rendered later, inside the container), a mapping, null — is kept as written.
    One pass only, so a substituted value is never rendered again.
    """

    def replace(match: re.Match[str]) -> str:
        expression = match.group(1).strip()
        if not _REFERENCE_RE.match(expression):
            return match.group(0)
        value = _lookup(expression, parameters, selected)
        text = None if value is _MISSING else _format_value(value)
        return match.group(0) if text is None else text

    return _PLACEHOLDER_RE.sub(replace, template)


def _render_entrypoint(
    role: _Role, deployment: Mapping[str, Any] | None, parameters: Mapping[str, Any] | None
) -> str:
    hooks = (deployment or {}).get(role.name) or {}
    commands = [*hooks.get("preCommands", []), *role.commands, *hooks.get("postCommands", [])]
    # Folded YAML scalars (`>`) end with a newline; strip it so that the script has no empty lines.
    script = "\n".join(command.strip() for command in commands)
    return _render(script, parameters, role.selected)


def _mask_secrets(raw: Mapping[str, Any]) -> dict[str, Any]:
    masked = copy.deepcopy(dict(raw))
    secrets = masked.get("secrets")
    if isinstance(secrets, dict):
        masked["secrets"] = {key: SECRET_MASK for key in secrets}
    elif secrets is not None:
        masked["secrets"] = SECRET_MASK
    return masked


# ---- entry point -----------------------------------------------------------------------------------


_SKU_TYPES_RE = re.compile(r"^[\w.-]+(\|[\w.-]+)*$")


@dataclass(frozen=True)
class _HivedRole:
    sku_types: tuple[str, ...] = ()
    pinned_cell: str | None = None
    gpu_memory_mb: int = 0


def _hived_task_roles(
    problems: _Problems, hived: Mapping[str, Any], role_names: set[str]
) -> dict[str, _HivedRole]:
    """extras.hivedScheduler.taskRoles: per role, the acceptable SKU types ("A100|H100"), a pinned cell
    and (beyond OpenPAI) the GPU memory of a GPU share."""
    where = "extras.hivedScheduler.taskRoles"
    task_roles = _get_mapping(problems, hived, "taskRoles", "extras.hivedScheduler")
    out: dict[str, _HivedRole] = {}
    for name, settings in (task_roles or {}).items():
        path = f"{where}.{name}"
        if name not in role_names:
            problems.add(path, f"names no task role: {name!r}")
            continue
        if not isinstance(settings, Mapping):
            problems.add(path, f"must be a mapping, got {_kind(settings)}")
            continue
        # OpenPAI's own examples write `skuType: null` for "any".
        present = {k: v for k, v in settings.items() if v is not None}
        sku = _get_str(problems, present, "skuType", path, required=False)
        if sku is not None and not _SKU_TYPES_RE.match(sku):
            problems.add(f"{path}.skuType", "must be a SKU type name, or several joined by '|'")
            sku = None
        pinned = _get_str(problems, present, "pinnedCellId", path, required=False)
        memory = _get_int(problems, present, "gpuMemoryMB", path, default=0, minimum=0) or 0
        out[name] = _HivedRole(tuple(sku.split("|")) if sku else (), pinned, memory)
    return out


def parse_job(yaml_text: str, username: str, now_ms: int) -> ParsedJob:
    """Parse, check and render a protocol v2 YAML submitted by `username` at `now_ms`.

    Raises PayloadTooLargeError for a body over MAX_BODY_BYTES and InvalidProtocolError (message: a JSON
    array of {field, message}) for anything else wrong with it.
    """
    # Cheap check first: a str never has fewer bytes than characters.
    # surrogatepass: a lone surrogate is refused below with its position, not failed on here.
    if len(yaml_text) > MAX_BODY_BYTES or len(yaml_text.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"The job protocol is larger than {MAX_BODY_BYTES // 1024} KiB.")

    try:
        doc = _load(yaml_text)
    except yaml.YAMLError as exc:
        raise _invalid(ROOT_FIELD, _yaml_error_message(exc)) from exc
    except RecursionError as exc:
        # MAX_DEPTH bounds the composer; this guards the scanner and constructor as well.
        raise _invalid(ROOT_FIELD, "invalid YAML: the document is nested too deeply") from exc
    if not isinstance(doc, dict):
        raise _invalid(ROOT_FIELD, f"the job protocol must be a mapping, got {_kind(doc)}")

    problems = _Problems()
    _check_plain_json(doc, "", problems)
    # The checks below index by string keys and build dotted paths; stop here if that is unsafe.
    problems.raise_if_any()

    if "protocolVersion" not in doc:
        problems.add("protocolVersion", "is required")
    elif not _is_version_2(doc["protocolVersion"]):
        problems.add("protocolVersion", f"must be 2 or '2', got {_kind(doc['protocolVersion'])}")

    name = _get_str(problems, doc, "name", "", required=True)
    if name is not None:
        if not _NAME_RE.match(name):
            problems.add("name", "must match ^[a-zA-Z0-9_-]+$")
        elif len(name) > _MAX_NAME_LENGTH:
            problems.add("name", f"must be at most {_MAX_NAME_LENGTH} characters, got {len(name)}")

    if "type" not in doc:
        problems.add("type", "is required")
    elif doc["type"] != "job":
        problems.add("type", f"must be 'job', got {_kind(doc['type'])}")

    job_retry_count = _get_int(problems, doc, "jobRetryCount", "", default=0, minimum=0)
    parameters = _get_mapping(problems, doc, "parameters", "")
    secrets = _get_mapping(problems, doc, "secrets", "")

    before = len(problems.items)
    prerequisites = _check_prerequisites(doc, problems)
    # References into a malformed prerequisites section are not checked: the entry a role names may be
    # the malformed one, and the problem is already reported there.
    check_references = len(problems.items) == before
    has_prerequisites = "prerequisites" in doc

    roles: list[_Role] = []
    task_roles = _get_mapping(problems, doc, "taskRoles", "", required=True)
    if task_roles is not None and not task_roles:
        problems.add("taskRoles", "must have at least one task role")
    for key, spec in (task_roles or {}).items():
        if not _TASK_ROLE_RE.match(key):
            problems.add(_join("taskRoles", key), "task role name must match ^[a-zA-Z_][a-zA-Z0-9_]*$")
            continue
        if not isinstance(spec, dict):
            problems.add(_join("taskRoles", key), f"must be a mapping, got {_kind(spec)}")
            continue
        role = _check_role(key, spec, prerequisites, has_prerequisites, check_references, problems)
        if role is not None:
            roles.append(role)
    tasks = sum(role.instances for role in roles)
    if tasks > MAX_TASKS:
        problems.add(
            "taskRoles",
            f"the job has {tasks} task instances in all; at most {MAX_TASKS} are accepted (every message"
            " about a job carries each task's status): split it into several jobs",
        )

    before = len(problems.items)
    deployments = _check_deployments(doc, set(task_roles) if task_roles else None, problems)
    deployments_usable = len(problems.items) == before

    virtual_cluster = DEFAULT_VIRTUAL_CLUSTER
    deployment: dict[str, Any] | None = None
    defaults = _get_mapping(problems, doc, "defaults", "")
    if defaults is not None:
        # An empty value means "not set", as OpenPAI reads these with `||`. Whether the VC exists is the
        # submission's question (404 NoVirtualClusterError), not the protocol's.
        vc = _get_str(problems, defaults, "virtualCluster", "defaults", required=False, allow_empty=True)
        if vc:
            virtual_cluster = vc
        chosen = _get_str(problems, defaults, "deployment", "defaults", required=False, allow_empty=True)
        if chosen:
            if chosen not in deployments and deployments_usable:
                problems.add("defaults.deployment", f"names no deployment: {chosen!r}")
            elif chosen in deployments:
                deployment = deployments[chosen]

    priority = PRIORITY_BY_CLASS[DEFAULT_PRIORITY_CLASS]
    gang_allocation = True
    placement: dict[str, _HivedRole] = {}
    lazy_preemption = False
    extras = _get_mapping(problems, doc, "extras", "")
    if extras is not None:
        hived = _get_mapping(problems, extras, "hivedScheduler", "extras")
        if hived is not None:
            # Every declared role counts, valid or not: a broken role is reported once, at the role.
            declared = set(task_roles) if task_roles else {role.name for role in roles}
            placement = _hived_task_roles(problems, hived, declared)
            lazy = hived.get("lazyPreemptionEnable", False)
            if isinstance(lazy, bool):
                lazy_preemption = lazy
            else:
                problems.add(
                    "extras.hivedScheduler.lazyPreemptionEnable", f"must be a boolean, got {_kind(lazy)}"
                )
        if hived is not None and "jobPriorityClass" in hived:
            priority_class = hived["jobPriorityClass"]
            if isinstance(priority_class, str) and priority_class in PRIORITY_BY_CLASS:
                priority = PRIORITY_BY_CLASS[priority_class]
            else:
                problems.add(
                    "extras.hivedScheduler.jobPriorityClass",
                    f"must be one of {', '.join(PRIORITY_BY_CLASS)}, got {_kind(priority_class)}",
                )
        if "gangAllocation" in extras:
            if isinstance(extras["gangAllocation"], bool):
                gang_allocation = extras["gangAllocation"]
            else:
                problems.add(
                    "extras.gangAllocation", f"must be a boolean, got {_kind(extras['gangAllocation'])}"
                )

    depends_on = []
    if extras is not None and "dependencies" in extras:
        depends_on = dependencies.parse(extras["dependencies"], username, name, problems.add)
    grace = None
    if extras is not None and "preemption" in extras:
        grace = preemption.parse(extras["preemption"], problems.add)
    elastic_minimum: dict[str, int] = {}
    if extras is not None and "elastic" in extras:
        # A declared role that is itself broken (reported there) is known, its task number not.
        sizes: dict[str, int | None] = dict.fromkeys(task_roles or {})
        sizes.update({role.name: role.instances for role in roles})
        elastic_minimum = elastic.parse(extras["elastic"], sizes, gang_allocation, problems.add)

    runtime_plugins: list[dict[str, Any]] = []
    if extras is not None and isinstance(extras.get(RUNTIME_PLUGIN_EXTRA), list):
        runtime_plugins = [p for p in extras[RUNTIME_PLUGIN_EXTRA] if isinstance(p, dict)]

    problems.add_schema_problems(doc)
    problems.raise_if_any()
    assert name is not None and job_retry_count is not None

    spec = JobSpec(
        job_key=f"{username}~{name}",
        user=username,
        name=name,
        virtual_cluster=virtual_cluster,
        priority=priority,
        job_retry_count=job_retry_count,
        task_roles=[
            TaskRoleSpec(
                name=role.name,
                instances=role.instances,
                gpu=role.gpu,
                cpu=role.cpu,
                memory_mb=role.memory_mb,
                entrypoint=_render_entrypoint(role, deployment, parameters),
                min_failed_instances=role.min_failed,
                min_succeeded_instances=role.min_succeeded,
                # OpenPAI retries single tasks only without gang allocation; otherwise a failed task fails
                # the whole attempt, which the job retry policy then handles.
                task_retry_count=role.task_retry_count if not gang_allocation else 0,
                sku_types=placement.get(role.name, _HivedRole()).sku_types,
                pinned_cell=placement.get(role.name, _HivedRole()).pinned_cell,
                gpu_milli=role.gpu_milli,
                infiniband=role.infiniband,
                gpu_memory_mb=placement.get(role.name, _HivedRole()).gpu_memory_mb,
                ports=role.ports,
                shm_mb=role.shm_mb,
                image=role.image,
            )
            for role in roles
        ],
        submitted_at=now_ms,
        lazy_preemption=lazy_preemption,
        gang_allocation=gang_allocation,
        runtime_plugins=copy.deepcopy(runtime_plugins),
        has_secrets=bool(secrets),
        dependencies=depends_on,
        preemption_grace_s=grace,
        elastic=elastic_minimum,
    )
    return ParsedJob(spec=spec, raw=doc, masked=_mask_secrets(doc))
