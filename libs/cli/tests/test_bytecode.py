"""`pai up` writes the bytecode of the platform's source checkout (pai_cli.bytecode), even where
PYTHONDONTWRITEBYTECODE keeps Python from caching it, and leaves installed packages alone."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from pai_cli import bytecode


def make_package(root: Path, name: str) -> Path:
    package = root / name
    (package / "tests").mkdir(parents=True)
    (package / "__init__.py").write_text("VALUE = 1\n")
    (package / "core.py").write_text("def answer() -> int:\n    return 42\n")
    (package / "tests" / "test_core.py").write_text("def test_nothing() -> None:\n    pass\n")
    return package


def pyc(source: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(source)))


def test_a_source_checkout_is_compiled_and_recompiled_when_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    package = make_package(tmp_path / "checkout", "pai_probe_src")
    monkeypatch.syspath_prepend(str(tmp_path / "checkout"))
    assert bytecode.source_dirs(["pai_probe_src", "pai_absent"]) == [package]

    assert bytecode.compile_sources(["pai_probe_src"])
    assert pyc(package / "__init__.py").is_file()
    assert pyc(package / "core.py").is_file()
    assert not pyc(package / "tests" / "test_core.py").exists()  # tests are not the platform's processes

    first = pyc(package / "core.py").read_bytes()
    source = package / "core.py"
    source.write_text("def answer() -> int:\n    return 4242\n")
    later = source.stat().st_mtime + 10  # an edit in a later second (compileall compares whole seconds)
    os.utime(source, (later, later))
    assert bytecode.compile_sources(["pai_probe_src"])
    assert pyc(package / "core.py").read_bytes() != first


def test_an_installed_package_is_left_to_its_installer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "lib" / "site-packages"
    package = make_package(site, "pai_probe_installed")
    monkeypatch.syspath_prepend(str(site))
    assert bytecode.source_dirs(["pai_probe_installed"]) == []
    assert bytecode.compile_sources(["pai_probe_installed"])
    assert not (package / "__pycache__").exists()


def test_the_platform_packages_of_this_checkout_are_found() -> None:
    found = bytecode.source_dirs(["pai_common", "pai_jobs"])
    assert [p.name for p in found] == ["pai_common", "pai_jobs"]
