"""Tasks as Kubernetes Pods, through the official client's asyncio API (``kubernetes.aio``): create,
watch to the end, delete on stop, read the kubelet's log.

Every manifest is checked against the API schema (``schema``) before it is sent. Pods and Secrets are read
as the API server's JSON (the ``*_without_preload_content`` calls), which ``status.interpret`` reads.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shlex
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes.aio import client as _client
from kubernetes.aio import config as _config
from kubernetes.aio import watch as _watch

from pai_common.contract.commands import LaunchTask
from pai_runtime import barrier, membership, notice
from pai_runtime.backend import (
    SETUP_FAILED_EXIT,
    STORAGE_MOUNT_EXIT,
    Ended,
    LogText,
    SetupError,
    Started,
    TaskExit,
    TaskFiles,
    TaskPaths,
)
from pai_runtime.kubernetes import schema
from pai_runtime.kubernetes.manifest import (
    HOME,
    NOTICE_DIR,
    TASK_DIR,
    PodOptions,
    notice_host_path,
    pod_manifest,
    pod_name,
    secret_manifest,
    storage_secret,
)
from pai_runtime.kubernetes.status import IMAGE_PULL_FAILURES, PodOutcome, interpret
from pai_runtime.kubernetes.volumes import PodStorage, VolumeError, pod_storage

log = logging.getLogger(__name__)
WATCH_TIMEOUT_S = 300
LOG_TAIL_BYTES = 4096
# The client's own annotations are partial; this module talks to it untyped and checks what it sends.
client: Any = _client
config: Any = _config
watch: Any = _watch
ApiException: Any = _client.exceptions.ApiException


async def connect(in_cluster: bool, kubeconfig: Path | None) -> Any:
    """The client's API object, configured in the cluster (service account) or from a kubeconfig."""
    configuration = client.Configuration()
    if in_cluster:
        config.load_incluster_config(client_configuration=configuration)
    else:
        await config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None, client_configuration=configuration
        )
    return client.ApiClient(configuration)


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


async def _read(call: Awaitable[Any]) -> dict[str, Any]:
    """The API server's JSON answer to a ``*_without_preload_content`` call; ApiException for an error
    status, as the client raises it for the ordinary calls."""
    response = await call
    try:
        body = await response.read()
        if not 200 <= response.status < 300:
            raise ApiException(
                status=response.status, reason=response.reason, body=body.decode(errors="replace")
            )
        loaded = json.loads(body)
    finally:
        response.release()
    return loaded if isinstance(loaded, dict) else {}


def fpga_resources(task: TaskFiles) -> dict[str, int]:
    """The device plugin resources of the task's FPGAs (resource name → count). The kubelet's device
    manager picks which devices of that resource the pod gets; HiveD's allocation decides how many.
    SetupError for an FPGA whose inventory entry names no resource: the pod could not get it."""
    counts: dict[str, int] = {}
    for fpga in task.fpgas:
        if fpga.resource is None:
            raise SetupError(
                SETUP_FAILED_EXIT,
                f"FPGA {fpga.index} ({fpga.model}) has no device plugin resource in this node's inventory"
                " (fpgas[].resource), so a pod cannot be given it",
            )
        counts[fpga.resource] = counts.get(fpga.resource, 0) + 1
    return counts


class KubernetesBackend:
    """``api``: the client's ``ApiClient``; None to connect at ``start`` as ``in_cluster``/``kubeconfig``
    say."""

    def __init__(
        self,
        options: PodOptions,
        api: Any = None,
        in_cluster: bool = False,
        kubeconfig: Path | None = None,
    ) -> None:
        self.options = options
        self._api = api
        self._in_cluster = in_cluster
        self._kubeconfig = kubeconfig

    @property
    def namespace(self) -> str:
        return self.options.namespace

    @property
    def core(self) -> Any:
        if self._api is None:
            raise RuntimeError("the Kubernetes backend is not connected")
        return client.CoreV1Api(self._api)

    async def start(self) -> None:
        if self._api is None:
            self._api = await connect(self._in_cluster, self._kubeconfig)

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()

    def paths(self, workdir: Path) -> TaskPaths:
        # The pod's image decides whether it has sshd; the barrier comes in the task's Secret.
        # The pod's own folder on the node, which the agent writes into while the pod runs: its preemption
        # notice, and an elastic task's membership file (the pod's bootstrap signals the task on a change).
        folder = NOTICE_DIR if self.options.notice_host_dir else None
        return TaskPaths(
            HOME,
            "python3",
            f"{TASK_DIR}/barrier.py",
            "auto",
            f"{folder}/{notice.FILE_NAME}" if folder else None,
            f"{folder}/{membership.FILE_NAME}" if folder else None,
        )

    def mounts(self, cmd: LaunchTask, credentials: dict[str, dict[str, str]]) -> PodStorage:
        try:
            return pod_storage(pod_name(cmd), cmd.mounts, credentials)
        except VolumeError as exc:
            raise SetupError(STORAGE_MOUNT_EXIT, f"{exc}; not mounted") from exc

    async def launch(
        self, cmd: LaunchTask, workdir: Path, task: TaskFiles, mounts: PodStorage | None
    ) -> Started:
        """The task as a Pod bound to this node; its scripts and the job's secrets in its Secret."""
        workdir.mkdir(parents=True, exist_ok=True)
        files = dict(task.files)
        folder = notice_host_path(self.options, pod_name(cmd))
        if folder is not None and membership.FILE_NAME in files:
            # Into the pod's node folder, where updates reach the running pod (not a copy in its home).
            text, _ = files.pop(membership.FILE_NAME)
            await asyncio.to_thread(membership.write, Path(folder) / membership.FILE_NAME, text)
        if task.failed:
            scripts = {"user.sh": task.entrypoint}
        else:
            pre = "\n".join(filter(None, [files_script(files, HOME), task.pre]))
            scripts = {"pre.sh": pre, "user.sh": task.entrypoint, "post.sh": task.post}
        scripts["barrier.py"] = Path(barrier.__file__).read_text()
        storage = None if task.failed else mounts
        devices = {} if task.failed else fpga_resources(task)
        pod = pod_manifest(cmd, {**task.env, "HOME": HOME}, self.options, storage, devices)
        secret = secret_manifest(cmd, self.options, scripts, task.secrets)
        extra = [
            storage_secret(cmd, self.options, name, data)
            for name, data in (storage.secrets if storage else {}).items()
        ]
        uid = await self.create(pod, secret, extra)
        return Started({"pod": pod["metadata"]["name"], "pod_uid": uid}, "kubernetes")

    async def create(
        self, pod: dict[str, Any], secret: dict[str, Any], extra: list[dict[str, Any]] | None = None
    ) -> str:
        """Create the Pod (or find it, created by an earlier delivery), then its Secrets (the task's, and
        its storages' credentials); the Pod's uid. The kubelet waits for a volume's Secret to appear."""
        for manifest in (pod, secret, *(extra or [])):
            schema.validate(manifest)
        name = pod["metadata"]["name"]
        core = self.core
        try:
            created = await _read(core.create_namespaced_pod_without_preload_content(self.namespace, pod))
        except ApiException as exc:
            if exc.status != 409:
                raise
            created = await _read(core.read_namespaced_pod_without_preload_content(name, self.namespace))
        uid = str((created.get("metadata") or {}).get("uid", ""))
        owner = {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid, "blockOwnerDeletion": False}
        for each in (secret, *(extra or [])):
            owned = {**each, "metadata": {**each["metadata"], "ownerReferences": [owner]}}
            try:
                await _read(core.create_namespaced_secret_without_preload_content(self.namespace, owned))
            except ApiException as exc:
                if exc.status != 409:
                    raise
        return uid

    async def wait(self, run: dict[str, Any]) -> Ended:
        name = str(run["pod"])
        outcome = await self.wait_pod(name)
        try:
            tail = await self.pod_log(name, LOG_TAIL_BYTES)
        except Exception as exc:  # the exit matters more than its log
            log.warning("pod log not read", extra={"pod": name, "error": repr(exc)})
            tail = ""
        if outcome.message:
            tail = (tail + "\n" + outcome.message)[-LOG_TAIL_BYTES:]
        folder = notice_host_path(self.options, name)
        if folder is not None:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        return Ended(
            TaskExit(outcome.exit_code or 0, outcome.signal),
            tail,
            pod_reason=outcome.pod_reason,
            container_reason=outcome.container_reason,
        )

    async def wait_pod(self, name: str, on_running: Callable[[], None] | None = None) -> PodOutcome:
        """Watch the Pod until its task ends; an image that cannot be pulled ends it (and the Pod)."""
        resource_version: str | None = None
        told_running = False
        core = self.core
        while True:
            async with watch.Watch() as stream:
                async for event in stream.stream(
                    core.list_namespaced_pod,
                    self.namespace,
                    field_selector=f"metadata.name={name}",
                    resource_version=resource_version,
                    timeout_seconds=WATCH_TIMEOUT_S,
                ):
                    pod = event.get("raw_object") or {}
                    metadata = pod.get("metadata") or {}
                    resource_version = metadata.get("resourceVersion") or resource_version
                    outcome = interpret(pod, deleted=event["type"] == "DELETED")
                    if outcome.state == "running" and not told_running and on_running is not None:
                        told_running = True
                        on_running()
                    if outcome.state == "exited":
                        if outcome.container_reason in IMAGE_PULL_FAILURES:
                            await self.delete(name, 0)
                        return outcome
            # The watch timed out without news: the Pod may have gone while nobody watched.
            try:
                pod = await _read(core.read_namespaced_pod_without_preload_content(name, self.namespace))
            except ApiException as exc:
                if exc.status == 404:
                    return interpret({}, deleted=True)
                raise
            outcome = interpret(pod)
            if outcome.state == "exited":
                return outcome

    async def kill(self, run: dict[str, Any], grace_s: float) -> None:
        await self.delete(str(run["pod"]), grace_s)

    async def notify(self, run: dict[str, Any], content: dict[str, Any]) -> bool:
        """Into the pod's folder on this node (hostPath), which the pod sees at NOTICE_DIR; the deletion
        that follows gives the pod its SIGTERM and the grace."""
        folder = notice_host_path(self.options, str(run["pod"]))
        if folder is None:
            return False
        await asyncio.to_thread(notice.write, Path(folder) / notice.FILE_NAME, content)
        return True

    async def membership(self, run: dict[str, Any], text: str) -> bool:
        """Into the pod's node folder (as a notice); the pod's bootstrap sees the new version within a
        second and signals the task (``manifest.MEMBERSHIP_WATCH``). Without a node folder the pod's file
        is a copy in its home that nothing can change: False, and the agent logs the update."""
        folder = notice_host_path(self.options, str(run["pod"]))
        if folder is None:
            return False
        await asyncio.to_thread(membership.write, Path(folder) / membership.FILE_NAME, text)
        return True

    async def delete(self, name: str, grace_s: float) -> None:
        try:
            await _read(
                self.core.delete_namespaced_pod_without_preload_content(
                    name, self.namespace, grace_period_seconds=int(grace_s)
                )
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def logs(self, run: dict[str, Any], stream: str, tail_bytes: int) -> LogText:
        """A pod's log as the kubelet keeps it: stdout and stderr together, whichever stream is asked."""
        content = await self.pod_log(str(run["pod"]), tail_bytes)
        return LogText(content, len(content.encode()), False)

    async def pod_log(self, name: str, tail_bytes: int) -> str:
        try:
            # limit_bytes counts from the start; the tail is the last lines, cut to size here.
            text = await self.core.read_namespaced_pod_log(
                name, self.namespace, container="app", tail_lines=2000
            )
        except ApiException as exc:
            if exc.status in (400, 404):
                return ""
            raise
        return str(text)[-tail_bytes:]
