"""Small jobs and fresh names for the CLI and SDK acceptance tests."""

from __future__ import annotations

import uuid
from typing import Any

import yaml


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def unique_group(prefix: str) -> str:
    """A fresh group or storage name (letters, digits and _ only)."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def job_yaml(name: str, *commands: str, secrets: dict[str, str] | None = None, retries: int = 0) -> str:
    """A one-task CPU job running ``commands``."""
    protocol: dict[str, Any] = {
        "protocolVersion": 2,
        "name": name,
        "type": "job",
        "jobRetryCount": retries,
        "prerequisites": [{"type": "dockerimage", "uri": "python:3.11-slim", "name": "image"}],
        "taskRoles": {
            "worker": {
                "instances": 1,
                "dockerImage": "image",
                "resourcePerInstance": {"gpu": 0, "cpu": 1, "memoryMB": 256},
                "commands": list(commands),
            }
        },
    }
    if secrets is not None:
        protocol["secrets"] = secrets
    return yaml.safe_dump(protocol, sort_keys=False)
