"""Render the Kubernetes overlays the way an operator applies them, and read the objects back.

Rendering needs kustomize v4 or later (components came with v3.7 and are used here). It is found as
`kustomize` on PATH, or as `kubectl kustomize` where kubectl's built-in kustomize is recent enough: the
project's machine image ships a kubectl 1.32 with kustomize v5 (/usr/bin/kubectl). Debian's own
`kubernetes-client` is kubectl 1.20 with kustomize v2.0.3, which cannot build components, so it is not
used. PAI_KUSTOMIZE names another binary (a `kustomize` or a `kubectl`) explicitly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"


def load_script(path: Path, name: str) -> ModuleType:
    """A deployment script (not a package), such as the NATS users' generators."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# deploy/k8s/nats_users.py, which writes the NATS users; deploy/compose/credentials.py, which writes the
# Compose deployment's NATS and MongoDB users (its halves: compose_nats_users, compose_mongo_users).
nats_users = load_script(K8S / "nats_users.py", "pai_deploy_nats_users")
compose_credentials = load_script(REPO / "deploy" / "compose" / "credentials.py", "pai_compose_credentials")
compose_nats_users = compose_credentials.nats_users
compose_mongo_users = compose_credentials.mongo_users
OVERLAYS = ("dev", "production")
KUBERNETES_VERSION = "1.30.0"


class KustomizeMissing(RuntimeError):
    pass


def _kustomize_major(version: str) -> int:
    match = re.search(r"v?(\d+)\.", version)
    return int(match.group(1)) if match else 0


@cache
def kustomize_command() -> tuple[str, ...]:
    """The command that renders a kustomization directory given as its last argument."""
    candidates = [os.environ["PAI_KUSTOMIZE"]] if os.environ.get("PAI_KUSTOMIZE") else []
    candidates += [c for c in (shutil.which("kustomize"), shutil.which("kubectl")) if c]
    tried = []
    for binary in candidates:
        if Path(binary).name.startswith("kustomize"):
            out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=60)
            version, command = out.stdout.strip(), (binary, "build")
        else:
            out = subprocess.run(
                [binary, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60
            )
            try:
                version = json.loads(out.stdout).get("kustomizeVersion", "")
            except ValueError:
                version = ""
            command = (binary, "kustomize")
        if _kustomize_major(version) >= 4:
            return command
        tried.append(f"{binary} (kustomize {version or 'unknown'})")
    raise KustomizeMissing(
        "rendering the overlays needs kustomize v4 or later: install `kustomize`, or a kubectl of 1.21 or "
        "later, or set PAI_KUSTOMIZE; found: " + (", ".join(tried) or "neither kustomize nor kubectl")
    )


def render(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run([*kustomize_command(), str(directory)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise AssertionError(f"kustomize failed on {directory}:\n{out.stderr}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def render_with_components(tmp: Path, overlay: str, *components: str) -> list[dict[str, Any]]:
    """An overlay plus optional components, as an operator would add them in a kustomization of theirs."""
    tmp.mkdir(parents=True, exist_ok=True)
    up = os.path.relpath(K8S, tmp)  # kustomize accepts relative paths only
    (tmp / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [f"{up}/overlays/{overlay}"],
                "components": [f"{up}/components/{c}" for c in components],
            }
        )
    )
    return render(tmp)


def of_kind(objects: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in kinds]


def by_name(objects: list[dict[str, Any]], kind: str, namespace: str | None = None) -> dict[str, Any]:
    return {
        o["metadata"]["name"]: o
        for o in of_kind(objects, kind)
        if namespace is None or o["metadata"].get("namespace") == namespace
    }


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector matches a set of labels (an empty selector matches all)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def container_env(workload: dict[str, Any], index: int = 0) -> dict[str, dict[str, Any]]:
    container = workload["spec"]["template"]["spec"]["containers"][index]
    return {e["name"]: e for e in container.get("env") or []}
