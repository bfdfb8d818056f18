"""Tasks as Kubernetes Pods, through the official client: create, watch to the end, delete on stop.

Synchronous (the client is); the agent calls it from worker threads. Every manifest is checked against
the API schema (``k8s_schema``) before it is sent.
"""

from __future__ import annotations

import base64
import logging
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client as _client
from kubernetes import config as _config
from kubernetes import watch as _watch
from kubernetes.client.exceptions import ApiException

from pai_runtime import k8s_schema
from pai_runtime.k8s_manifest import TASK_DIR, PodOptions
from pai_runtime.k8s_status import IMAGE_PULL_FAILURES, PodOutcome, interpret

log = logging.getLogger(__name__)
WATCH_TIMEOUT_S = 300
# The client's own annotations are partial; this module talks to it untyped and checks what it sends.
client: Any = _client
config: Any = _config
watch: Any = _watch


def connect(in_cluster: bool, kubeconfig: Path | None) -> Any:
    if in_cluster:
        config.load_incluster_config()
    else:
        config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None)
    return client.CoreV1Api()


def files_script(files: dict[str, tuple[str, int]], home: str) -> str:
    """Shell lines that recreate the plugin files inside the pod (no file of the agent reaches it)."""
    lines = []
    for rel, (content, mode) in sorted(files.items()):
        path = f"{home}/{rel}"
        encoded = base64.b64encode(content.encode()).decode()
        lines += [
            f"mkdir -p {shlex.quote(str(Path(path).parent))}",
            f"echo {encoded} | base64 -d > {shlex.quote(path)}",
            f"chmod {mode:o} {shlex.quote(path)}",
        ]
    return "\n".join(lines)


class KubernetesBackend:
    def __init__(self, core: Any, options: PodOptions) -> None:
        self.core = core
        self.options = options
        self._serializer: Any = client.ApiClient()

    @property
    def namespace(self) -> str:
        return self.options.namespace

    def create(self, pod: dict[str, Any], secret: dict[str, Any]) -> str:
        """Create the Pod (or find it, created by an earlier delivery), then its Secret; the Pod's uid."""
        k8s_schema.validate(pod)
        k8s_schema.validate(secret)
        name = pod["metadata"]["name"]
        try:
            created = self.core.create_namespaced_pod(self.namespace, pod)
        except ApiException as exc:
            if exc.status != 409:
                raise
            created = self.core.read_namespaced_pod(name, self.namespace)
        uid = str(created.metadata.uid)
        owned = {**secret, "metadata": {**secret["metadata"], "ownerReferences": [
            {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid, "blockOwnerDeletion": False}
        ]}}  # fmt: skip
        try:
            self.core.create_namespaced_secret(self.namespace, owned)
        except ApiException as exc:
            if exc.status != 409:
                raise
        return uid

    def wait(self, name: str, on_running: Callable[[], None] | None = None) -> PodOutcome:
        """Watch the Pod until its task ends; an image that cannot be pulled ends it (and the Pod)."""
        resource_version: str | None = None
        told_running = False
        while True:
            stream = watch.Watch().stream(
                self.core.list_namespaced_pod,
                self.namespace,
                field_selector=f"metadata.name={name}",
                resource_version=resource_version,
                timeout_seconds=WATCH_TIMEOUT_S,
            )
            for event in stream:
                obj = event["object"]
                pod = self._serializer.sanitize_for_serialization(obj)
                resource_version = (pod.get("metadata") or {}).get("resourceVersion") or resource_version
                outcome = interpret(pod, deleted=event["type"] == "DELETED")
                if outcome.state == "running" and not told_running and on_running is not None:
                    told_running = True
                    on_running()
                if outcome.state == "exited":
                    if outcome.container_reason in IMAGE_PULL_FAILURES:
                        self.delete(name, 0)
                    return outcome
            # The watch timed out without news: the Pod may have gone while nobody watched.
            try:
                pod = self._serializer.sanitize_for_serialization(
                    self.core.read_namespaced_pod(name, self.namespace)
                )
            except ApiException as exc:
                if exc.status == 404:
                    return interpret({}, deleted=True)
                raise
            outcome = interpret(pod)
            if outcome.state == "exited":
                return outcome

    def delete(self, name: str, grace_s: float) -> None:
        try:
            self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=int(grace_s))
        except ApiException as exc:
            if exc.status != 404:
                raise

    def logs(self, name: str, tail_bytes: int) -> str:
        try:
            # limit_bytes counts from the start; the tail is the last lines, cut to size here.
            text = self.core.read_namespaced_pod_log(name, self.namespace, container="app", tail_lines=2000)
        except ApiException as exc:
            if exc.status in (400, 404):
                return ""
            raise
        return str(text)[-tail_bytes:]


__all__ = ["TASK_DIR", "KubernetesBackend", "connect", "files_script"]
