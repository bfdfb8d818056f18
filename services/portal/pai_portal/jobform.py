"""The simple job form: one task role, written out as protocol v2 YAML for the editor. Pure.

The form never submits by itself: it writes YAML into the editor, where the user can read and change it
and the server's validation applies as to any other YAML. Values are not checked here beyond their types;
the jobs service is the one judge of a protocol.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml


@dataclass
class SimpleJob:
    name: str = ""
    image: str = "python:3.11-slim"
    commands: str = ""
    instances: int = 1
    gpu: int = 0
    cpu: int = 1
    memory_mb: int = 1024
    virtual_cluster: str = "default"
    retry_count: int = 0
    # "name=value" per line.
    parameters: str = ""
    problems: list[str] = field(default_factory=list)


def _int(form: Mapping[str, str], name: str, default: int, low: int, problems: list[str]) -> int:
    raw = (form.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{name}: {raw!r} is not a whole number")
        return default
    if value < low:
        problems.append(f"{name}: must be at least {low}")
        return default
    return value


def from_form(form: Mapping[str, str]) -> SimpleJob:
    problems: list[str] = []
    job = SimpleJob(
        name=(form.get("name") or "").strip(),
        image=(form.get("image") or "").strip() or SimpleJob.image,
        commands=form.get("commands") or "",
        instances=_int(form, "instances", 1, 1, problems),
        gpu=_int(form, "gpu", 0, 0, problems),
        cpu=_int(form, "cpu", 1, 1, problems),
        memory_mb=_int(form, "memoryMB", 1024, 1, problems),
        virtual_cluster=(form.get("virtualCluster") or "").strip() or "default",
        retry_count=_int(form, "jobRetryCount", 0, 0, problems),
        parameters=form.get("parameters") or "",
    )
    job.problems = problems
    return job


def _parameters(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def to_yaml(job: SimpleJob) -> str:
    doc: dict[str, Any] = {
        "protocolVersion": 2,
        "name": job.name or "my-job",
        "type": "job",
        "jobRetryCount": job.retry_count,
        "prerequisites": [{"type": "dockerimage", "uri": job.image, "name": "image"}],
    }
    params = _parameters(job.parameters)
    if params:
        doc["parameters"] = params
    doc["taskRoles"] = {
        "worker": {
            "instances": job.instances,
            "dockerImage": "image",
            "resourcePerInstance": {"gpu": job.gpu, "cpu": job.cpu, "memoryMB": job.memory_mb},
            "commands": [c for c in (line.strip() for line in job.commands.splitlines()) if c]
            or ["echo hello"],
        }
    }
    doc["defaults"] = {"virtualCluster": job.virtual_cluster}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def clone_yaml(config: Mapping[str, Any], new_name: str) -> str:
    """An earlier job's protocol (secrets masked by the API) under a new name, ready to edit."""
    doc = dict(config)
    doc["name"] = new_name
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def next_name(name: str, suffix: str) -> str:
    """``name-<suffix>``, the part after a previous clone suffix replaced; within OpenPAI's 255 chars."""
    base = re.sub(r"-clone-[0-9a-z]+$", "", name)
    return f"{base}-clone-{suffix}"[:255]


def job_name_of(text: str) -> str | None:
    """The ``name`` of a protocol document, when it has one (for where to go after submitting)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("name"), str | int):
        return str(doc["name"])
    return None
