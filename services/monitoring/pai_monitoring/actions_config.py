"""Which actions the alert handler runs for which alerts: the configuration and its matching (pure).

A YAML (or JSON) document::

    rules:
      - match: {alertname: PaiJobGpuIdle}          # every label must equal; a list means any of them
        actions:
          - email-user
          - email-admin
          - stop-jobs
          - tag-jobs: stopped-by-alert-manager
      - match: {alertname: [PaiGpuEccErrors, PaiGpuBad]}
        actions: [cordon-nodes, email-admin]
      - match: {}                                   # every alert
        actions:
          - webhook: http://extension.example/hook

Every rule an alert matches adds its actions, in order; the same action (kind and parameter) named by
two rules runs once. The action names are OpenPAI's alert handler's (plus ``webhook``):

* ``email-admin`` / ``email-user``: mail the admins (``PAI_ALERT_ADMIN_EMAILS``) or the owner of the job
  the alert names (its ``username`` label, or the user part of ``job_name``);
* ``stop-jobs`` / ``tag-jobs: <tag>``: stop or tag the job of the ``job_name`` label (``user~name``);
* ``cordon-nodes`` (or ``cordon-nodes: drain``): cordon the node of the ``node`` (or ``node_name``) label;
* ``webhook: <url>``: POST the alert as JSON to an extension (http or https).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from pai_common.errors import InvalidParametersError

KINDS = ("email-admin", "email-user", "stop-jobs", "tag-jobs", "cordon-nodes", "webhook")
NEEDS_PARAM = {"tag-jobs", "webhook"}
PARAM_CHOICES = {"cordon-nodes": ("", "drain")}
TAG = re.compile(r"^[^,]{1,256}$")


@dataclass(frozen=True)
class ActionSpec:
    kind: str
    param: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.param}" if self.param else self.kind


@dataclass(frozen=True)
class Rule:
    match: Mapping[str, tuple[str, ...]]
    actions: tuple[ActionSpec, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(name) in values for name, values in self.match.items())


@dataclass(frozen=True)
class ActionConfig:
    rules: tuple[Rule, ...] = ()

    def actions_for(self, labels: Mapping[str, str]) -> list[ActionSpec]:
        out: list[ActionSpec] = []
        for rule in self.rules:
            if rule.matches(labels):
                out.extend(a for a in rule.actions if a not in out)
        return out


def parse(doc: Any, where: str = "the alert actions") -> ActionConfig:
    if doc is None:
        return ActionConfig()
    if not isinstance(doc, dict) or set(doc) - {"rules"}:
        raise InvalidParametersError(f"{where}: must be a mapping with one key, rules")
    rules = doc.get("rules")
    rules = [] if rules is None else rules
    if not isinstance(rules, list):
        raise InvalidParametersError(f"{where}: rules must be a list")
    return ActionConfig(tuple(_rule(r, f"{where}: rules[{i}]") for i, r in enumerate(rules)))


def _rule(doc: Any, where: str) -> Rule:
    if not isinstance(doc, dict) or set(doc) - {"match", "actions"} or "actions" not in doc:
        raise InvalidParametersError(f"{where}: must be a mapping with match and actions")
    match = doc.get("match")
    match = {} if match is None else match
    if not isinstance(match, dict):
        raise InvalidParametersError(f"{where}.match: must be a mapping of label to value(s)")
    wanted: dict[str, tuple[str, ...]] = {}
    for name, value in match.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str | int | float) for v in values):
            raise InvalidParametersError(f"{where}.match.{name}: must be a string or a list of strings")
        wanted[str(name)] = tuple(str(v) for v in values)
    actions = doc["actions"]
    if not isinstance(actions, list) or not actions:
        raise InvalidParametersError(f"{where}.actions: must be a non-empty list")
    return Rule(wanted, tuple(_action(a, f"{where}.actions[{i}]") for i, a in enumerate(actions)))


def _action(doc: Any, where: str) -> ActionSpec:
    if isinstance(doc, str):
        kind, param = doc, ""
    elif isinstance(doc, dict) and len(doc) == 1:
        kind, value = next(iter(doc.items()))
        param = "" if value is None else str(value)
    else:
        raise InvalidParametersError(f"{where}: an action is a name, or a mapping of one name to its value")
    if kind not in KINDS:
        raise InvalidParametersError(f"{where}: unknown action {kind!r} (known: {', '.join(KINDS)})")
    if kind in NEEDS_PARAM and not param:
        raise InvalidParametersError(f"{where}: {kind} needs a value")
    if kind not in NEEDS_PARAM and kind not in PARAM_CHOICES and param:
        raise InvalidParametersError(f"{where}: {kind} takes no value")
    if kind in PARAM_CHOICES and param not in PARAM_CHOICES[kind]:
        raise InvalidParametersError(f"{where}: {kind} takes no value or {PARAM_CHOICES[kind][1]!r}")
    if kind == "tag-jobs" and not TAG.match(param):
        raise InvalidParametersError(f"{where}: a tag has 1 to 256 characters and no comma")
    if kind == "webhook":
        url = urlparse(param)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise InvalidParametersError(f"{where}: the webhook must be an http(s) URL")
    return ActionSpec(str(kind), param)


def load(path: Path) -> ActionConfig:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidParametersError(f"cannot read the alert actions {path}: {exc}") from exc
    return parse(doc, str(path))


DEFAULT_WITH_MAIL = ActionConfig((Rule({}, (ActionSpec("email-admin"),)),))
