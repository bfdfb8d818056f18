"""A job's secrets inside its tasks only: ``<% $secrets.x %>`` rendered in the task's own files, and
masked wherever the platform itself shows task output (log tails in events, the logs API)."""

from __future__ import annotations

import re
from typing import Any

MASK = "******"
# OpenPAI renders commands with mustache using "<% %>" as delimiters: <% $secrets.name %>.
_REFERENCE = re.compile(r"<%\s*\$secrets((?:\.[A-Za-z0-9_-]+)+)\s*%>")
# Shorter values cannot be masked without defacing ordinary output; they are no secret worth the name.
MIN_MASKED_LENGTH = 3


class SecretNotFoundError(ValueError):
    """A command refers to a secret the job does not define."""


def _lookup(secrets: dict[str, Any], path: str) -> str:
    value: Any = secrets
    for part in path.strip(".").split("."):
        if not isinstance(value, dict) or part not in value:
            raise SecretNotFoundError(f"the job has no secret $secrets{path}")
        value = value[part]
    if isinstance(value, dict | list):
        raise SecretNotFoundError(f"$secrets{path} is not a single value")
    return str(value)


def render(text: str, secrets: dict[str, Any]) -> str:
    """``text`` with every ``<% $secrets.x.y %>`` replaced by its value; an unknown name is an error."""
    return _REFERENCE.sub(lambda m: _lookup(secrets, m.group(1)), text)


def values(secrets: Any) -> list[str]:
    """Every leaf value worth masking, longest first (so that no shorter one masks part of a longer)."""
    found: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)
        elif v is not None and len(str(v)) >= MIN_MASKED_LENGTH:
            found.add(str(v))

    walk(secrets)
    return sorted(found, key=lambda s: (-len(s), s))


def mask(text: str, secret_values: list[str]) -> str:
    for value in secret_values:
        text = text.replace(value, MASK)
    return text
