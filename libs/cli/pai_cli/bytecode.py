"""The platform's own modules compiled to bytecode before `pai up` starts its processes.

Python caches a module's bytecode in ``__pycache__`` when it first imports it, unless
``PYTHONDONTWRITEBYTECODE`` is set (as on the team's machines) or the directory is not writable. The
third-party packages are compiled when they are installed (``./dev setup``: ``uv sync --compile-bytecode``),
but the platform's own packages are an editable checkout, which that does not reach: every process of
`pai up` compiled each of the platform's modules it imports at every start, 35-110 ms of CPU per service
(the contract alone is some 2,000 lines), and every task supervisor its runtime modules. So `pai up` writes
the missing or stale ``.pyc`` files of the packages it runs when they are a source checkout, which costs a
directory walk once they are there. An installed package (under ``site-packages``) is left to its
installer; a read-only checkout is left as it is (its processes compile in memory, as before).
"""

from __future__ import annotations

import compileall
import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path

# Tests are not run by the platform's processes.
SKIPPED = re.compile(r"[/\\]tests?[/\\]")


def source_dirs(packages: Iterable[str]) -> list[Path]:
    """The directories of those ``packages`` imported from a source checkout (found, not imported)."""
    found: list[Path] = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            path = Path(location)
            if "site-packages" not in path.parts and "dist-packages" not in path.parts:
                found.append(path)
    return found


def compile_sources(packages: Iterable[str]) -> bool:
    """Write the missing or stale bytecode of ``packages``' source checkouts; False if any could not be."""
    ok = True
    for directory in source_dirs(packages):
        # quiet=2: a file that cannot be written is no reason to stop or to print; it compiles at import.
        ok = bool(compileall.compile_dir(directory, quiet=2, rx=SKIPPED)) and ok
    return ok
