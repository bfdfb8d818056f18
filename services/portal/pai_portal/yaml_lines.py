"""Where a protocol problem is in the YAML the user typed: ``{field, message}`` → a line number. Pure.

The jobs service reports each problem at a dotted path (``taskRoles.worker.resourcePerInstance.gpu``,
``prerequisites.0.uri``, ``(root)``); a YAML syntax error carries ``(line N, column M)`` in its message.
The path is followed through the composed YAML nodes (which keep their source positions); keys may
themselves contain dots (``extras.com.microsoft.pai.runtimeplugin``), so at each mapping the longest key
that the rest of the path starts with is taken. Where the path stops matching (a missing field), the
problem belongs to the deepest part that exists: the user sees it next to where the field should be.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

ROOT_FIELD = "(root)"
_LINE_IN_MESSAGE = re.compile(r"\(line (\d+), column \d+\)")


@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    # 1-based line of the YAML text, or None for the document as a whole.
    line: int | None


def parse_problems(message: str) -> list[tuple[str, str]]:
    """The ``{field, message}`` items of an InvalidProtocolError message (one root item otherwise)."""
    try:
        items = json.loads(message)
    except ValueError:
        return [(ROOT_FIELD, message)]
    if not isinstance(items, list):
        return [(ROOT_FIELD, message)]
    out = []
    for item in items:
        if isinstance(item, dict) and "message" in item:
            out.append((str(item.get("field") or ROOT_FIELD), str(item["message"])))
    return out or [(ROOT_FIELD, message)]


def _compose(text: str) -> Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def _segments_line(node: Node, path: str) -> int:
    """The 0-based line of the deepest node on ``path`` under ``node``."""
    line = node.start_mark.line
    rest = path
    while rest:
        if isinstance(node, MappingNode):
            best: tuple[int, Node, Node] | None = None
            for key, value in node.value:
                if not isinstance(key, ScalarNode):
                    continue
                k = str(key.value)
                if (rest == k or rest.startswith(k + ".")) and (best is None or len(k) > best[0]):
                    best = (len(k), key, value)
            if best is None:
                return line
            length, key_node, value_node = best
            line = key_node.start_mark.line
            node, rest = value_node, rest[length + 1 :]
        elif isinstance(node, SequenceNode):
            head, _, tail = rest.partition(".")
            if not head.isdigit() or int(head) >= len(node.value):
                return line
            node, rest = node.value[int(head)], tail
            line = node.start_mark.line
        else:
            return line
    return line


def locate(text: str, field: str, message: str) -> int | None:
    """The 1-based line a problem is about, or None when it is about the whole document."""
    found = _LINE_IN_MESSAGE.search(message)
    if found:
        return int(found.group(1))
    if not field or field == ROOT_FIELD:
        return None
    root = _compose(text)
    if root is None:
        return None
    return _segments_line(root, field) + 1


def problems_with_lines(text: str, message: str) -> list[Problem]:
    """Each problem with its line; one past the end (a YAML error at the end of the text) is shown on
    the last line, where the user will type the fix."""
    last = max(1, len(text.splitlines()))
    out = []
    for f, m in parse_problems(message):
        line = locate(text, f, m)
        out.append(Problem(f, m, min(line, last) if line is not None else None))
    return out
