"""Test support: the public OpenPAI/HiveD reference material that may sit beside the repository.

A development checkout has ``../shared/reference/`` (OpenPAI's examples, swagger, HiveD's configs); a
clone of the repository alone does not. Tests run on what the repository ships, and check against the
reference *in addition* where it exists. Where it does not, nothing fails and nothing is skipped
silently: every check that could not run is recorded here, and the root ``conftest.py`` reports them at
the end of the run (and deselects tests marked ``@pytest.mark.reference("<path>")``).
"""

from __future__ import annotations

import os
from pathlib import Path

# Set by the root conftest to <repository>/../shared/reference unless the environment names another place.
REFERENCE_ENV = "PAI_REFERENCE_DIR"

_not_run: dict[str, list[str]] = {}


def reference_root() -> Path | None:
    value = os.environ.get(REFERENCE_ENV)
    return Path(value) if value else None


def reference_dir(relative: str, checks: str) -> Path | None:
    """``<reference>/<relative>`` when it exists; otherwise None, and ``checks`` is reported as not run."""
    root = reference_root()
    path = root / relative if root is not None else None
    if path is not None and path.exists():
        return path
    where = str(path) if path is not None else f"${REFERENCE_ENV} (unset)/{relative}"
    _not_run.setdefault(where, [])
    if checks not in _not_run[where]:
        _not_run[where].append(checks)
    return None


def reference_files(relative: str, pattern: str, checks: str) -> list[Path]:
    """The reference files matching ``pattern`` (sorted), or [] with ``checks`` reported as not run."""
    directory = reference_dir(relative, checks)
    return sorted(directory.glob(pattern)) if directory is not None else []


def not_run() -> dict[str, list[str]]:
    """Where reference material was looked for in vain, and which checks could not run for want of it."""
    return {where: list(checks) for where, checks in _not_run.items()}
