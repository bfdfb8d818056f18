"""The Kubernetes backend: manifests checked against the API schema of the official client, Pod
statuses mapped to OpenPAI's codes, and the backend driving the official client's asyncio API against
recorded API responses served over HTTP (the client's real request path, no mock of it)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client as k8s_client
from kubernetes.aio import client as aio_client

from pai_common.contract.commands import LaunchTask
from pai_common.contract.types import StorageMount
from pai_runtime import membership
from pai_runtime.backend import TaskFiles
from pai_runtime.kubernetes import schema as k8s_schema
from pai_runtime.kubernetes.backend import KubernetesBackend, files_script
from pai_runtime.kubernetes.manifest import (
    MEMBERSHIP_WATCH,
    MEMBERSHIP_WATCH_S,
    NOTICE_DIR,
    PodOptions,
    pod_manifest,
    pod_name,
    secret_manifest,
    storage_secret,
)
from pai_runtime.kubernetes.schema import ManifestError
from pai_runtime.kubernetes.status import PodOutcome, interpret
from pai_runtime.kubernetes.volumes import pod_storage

DATA = Path(__file__).parent / "data" / "k8s"
OPTIONS = PodOptions(namespace="pai", grace_period_s=5)


def _cmd(**kw: Any) -> LaunchTask:
    base: dict[str, Any] = {
        "job_key": "alice~mnist", "attempt_id": 1, "task_role": "worker", "index": 2, "task_attempt_id": 0,
        "node": "node-a", "gpus": [1, 3], "entrypoint": "python train.py --token <% $secrets.token %>",
        "cpu": 4, "memory_mb": 8192, "shm_mb": 1024, "image": "pytorch/pytorch:2.3",
        "ports": {"ssh": [20001], "http": [20002], "nccl": [20003, 20004]}, "has_secrets": True,
    }  # fmt: skip
    base.update(kw)
    return LaunchTask(**base)


# ---- manifests -----------------------------------------------------------------------------------------


def test_the_pod_is_bound_isolated_limited_and_carries_no_secret() -> None:
    cmd = _cmd()
    env = {"PAI_JOB_NAME": "alice~mnist", "NVIDIA_VISIBLE_DEVICES": "1,3", "CUDA_VISIBLE_DEVICES": "1,3"}
    mounts = [
        StorageMount(
            name="data", type="pvc", mount_path="/mnt/data", read_only=True, data={"claimName": "pvc-data"}
        ),
        StorageMount(name="home", type="local", mount_path="/mnt/home", data={"path": "/h"}),
    ]
    pod = pod_manifest(cmd, env, OPTIONS, pod_storage(pod_name(cmd), mounts, {}))
    model = k8s_schema.validate(pod)
    assert isinstance(model, k8s_client.V1Pod)
    spec = pod["spec"]
    assert spec["nodeName"] == "node-a" and spec["hostNetwork"] is True and spec["restartPolicy"] == "Never"
    (app,) = spec["containers"]
    assert app["image"] == "pytorch/pytorch:2.3"
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "1,3"} in app["env"]
    assert app["resources"]["limits"] == {"cpu": "4", "memory": "8192Mi"} == app["resources"]["requests"]
    assert sorted(p["hostPort"] for p in app["ports"]) == [20001, 20002, 20003, 20004]
    assert all(p["hostPort"] == p["containerPort"] and len(p["name"]) <= 15 for p in app["ports"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1024Mi"}
    assert volumes["job-secrets"]["secret"]["secretName"] == pod["metadata"]["name"]
    assert volumes["storage-data"]["persistentVolumeClaim"] == {"claimName": "pvc-data", "readOnly": True}
    mounted = {m["mountPath"] for m in app["volumeMounts"]}
    assert {"/dev/shm", "/usr/local/pai/task", "/usr/local/pai/secrets", "/mnt/data", "/mnt/home"} <= mounted
    # The user's commands are only in the Secret; the pod spec shows neither them nor any secret.
    assert "train.py" not in json.dumps(pod)


STORAGES = [
    StorageMount(name="n1", type="nfs", mount_path="/mnt/n1", data={"server": "10.0.0.5", "path": "/x"}),
    StorageMount(
        name="n2", type="nfs", mount_path="/mnt/n2", mount_options=["nfsvers=4.1", "hard"],
        data={"server": "nfs.local", "path": "/y"}, read_only=True,
    ),
    StorageMount(
        name="smb", type="samba", mount_path="/mnt/smb", data={"address": "//srv/share", "username": "u"},
        has_credentials=True,
    ),
    StorageMount(
        name="af", type="azureFile", mount_path="/mnt/af", data={"accountName": "acct", "shareName": "s1"},
        has_credentials=True, sub_path="alice",
    ),
    StorageMount(
        name="ab", type="azureBlob", mount_path="/mnt/ab", secret_name="blob-creds",
        data={"accountName": "acct", "containerName": "c1"},
    ),
    StorageMount(name="claim", type="pvc", mount_path="/data", data={"claimName": "team-data"}),
    StorageMount(name="host", type="local", mount_path="/mnt/host", data={"path": "/srv/host"}),
]  # fmt: skip


def test_every_storage_type_is_a_volume_the_api_schema_accepts() -> None:
    cmd = _cmd()
    creds = {"smb": {"password": "smb-pw"}, "af": {"accountKey": "KEY=="}}
    storage = pod_storage(pod_name(cmd), STORAGES, creds)
    pod = pod_manifest(cmd, {}, OPTIONS, storage)
    k8s_schema.validate(pod)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["storage-n1"]["nfs"] == {"server": "10.0.0.5", "path": "/x", "readOnly": False}
    assert volumes["storage-n2"]["csi"]["driver"] == "nfs.csi.k8s.io"
    assert volumes["storage-n2"]["csi"]["volumeAttributes"]["mountOptions"] == "nfsvers=4.1,hard"
    smb = volumes["storage-smb"]["csi"]
    assert smb["driver"] == "smb.csi.k8s.io" and smb["volumeAttributes"] == {"source": "//srv/share"}
    assert volumes["storage-af"]["csi"]["volumeAttributes"]["secretName"] in storage.secrets
    assert volumes["storage-ab"]["csi"]["volumeAttributes"]["secretName"] == "blob-creds"
    assert volumes["storage-claim"]["persistentVolumeClaim"] == {"claimName": "team-data", "readOnly": False}
    assert volumes["storage-host"]["hostPath"] == {"path": "/srv/host", "type": "Directory"}
    mounts = {m["name"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["storage-af"]["subPath"] == "alice" and mounts["storage-n2"]["readOnly"] is True
    # Credentials only in Secrets the agent creates beside the Pod, never in the Pod.
    assert "smb-pw" not in json.dumps(pod) and "KEY==" not in json.dumps(pod)
    smb_secret = smb["nodePublishSecretRef"]["name"]
    assert storage.secrets[smb_secret] == {"username": "u", "password": "smb-pw"}
    for name, data in storage.secrets.items():
        assert isinstance(k8s_schema.validate(storage_secret(cmd, OPTIONS, name, data)), k8s_client.V1Secret)
    af = volumes["storage-af"]["csi"]["volumeAttributes"]["secretName"]
    assert storage.secrets[af] == {"azurestorageaccountname": "acct", "azurestorageaccountkey": "KEY=="}


def test_the_secret_holds_scripts_and_secrets_and_is_owned_by_the_pod() -> None:
    cmd = _cmd()
    secret = secret_manifest(
        cmd, OPTIONS, {"user.sh": "python train.py --token tok"}, {"token": "tok"}, "uid-1"
    )
    assert isinstance(k8s_schema.validate(secret), k8s_client.V1Secret)
    assert secret["stringData"]["user.sh"] == "python train.py --token tok"
    assert secret["stringData"]["secrets.yaml"] == "token: tok\n"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    with pytest.raises(ValueError, match="not files of a task"):
        secret_manifest(cmd, OPTIONS, {"evil.sh": ""}, {})


@settings(max_examples=80, deadline=None)
@given(
    job=st.from_regex(r"[A-Za-z0-9_.-]{1,20}~[A-Za-z0-9_.~-]{1,40}", fullmatch=True),
    role=st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,20}", fullmatch=True),
    index=st.integers(0, 500),
    gpus=st.lists(st.integers(0, 7), max_size=8, unique=True),
    cpu=st.integers(0, 64),
    memory=st.integers(0, 512 * 1024),
    shm=st.integers(0, 65536),
    labels=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True), st.integers(1, 3), max_size=4
    ),
    secrets=st.booleans(),
)
def test_every_generated_manifest_passes_the_api_schema(
    job: str, role: str, index: int, gpus: list[int], cpu: int, memory: int, shm: int,
    labels: dict[str, int], secrets: bool,
) -> None:  # fmt: skip
    port = iter(range(20000, 30000))
    cmd = _cmd(
        job_key=job, task_role=role, index=index, gpus=gpus, cpu=cpu, memory_mb=memory, shm_mb=shm,
        ports={k: [next(port) for _ in range(n)] for k, n in labels.items()}, has_secrets=secrets,
    )  # fmt: skip
    pod = pod_manifest(cmd, {"PAI_TASK_INDEX": str(index)}, OPTIONS)
    k8s_schema.validate(pod)
    name = pod["metadata"]["name"]
    assert len(name) <= 63 and name == name.lower() and name[0].isalpha() and name[-1].isalnum()
    assert all(len(v) <= 63 for v in pod["metadata"]["labels"].values())
    k8s_schema.validate(secret_manifest(cmd, OPTIONS, {"user.sh": "x"}, {"a": "b"}, "uid"))


def test_pod_names_differ_per_task_attempt() -> None:
    names = {pod_name(_cmd(task_attempt_id=a, index=i)) for a in range(3) for i in range(3)}
    assert len(names) == 9


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p["spec"].update(nodename="x"), "spec.nodename: not a field of V1PodSpec"),
        (lambda p: p["spec"].update(hostNetwork="yes"), "spec.hostNetwork: expected bool"),
        (
            lambda p: p["spec"]["containers"][0].update(ports=[{"containerPort": "80"}]),
            "containerPort: expected int",
        ),
        (lambda p: p["spec"]["containers"][0].pop("name"), "name"),
        (lambda p: p["spec"].update(containers={}), "expected a list"),
        (lambda p: p["metadata"].update(labels={"a": 1}), "labels.a: expected str"),
    ],
)
def test_the_schema_check_refuses_what_the_api_would(mutate: Any, message: str) -> None:
    pod = pod_manifest(_cmd(), {}, OPTIONS)
    mutate(pod)
    with pytest.raises(ManifestError, match=message):
        k8s_schema.validate(pod)


def test_plugin_files_are_recreated_inside_the_pod(tmp_path: Path) -> None:
    import subprocess

    script = files_script(
        {".ssh/config": ("Host a\n", 0o600), "bin/x": ("#!/bin/sh\n", 0o755)}, str(tmp_path)
    )
    subprocess.run(["bash", "-c", script], check=True)
    assert (tmp_path / ".ssh/config").read_text() == "Host a\n"
    assert (tmp_path / ".ssh/config").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "bin/x").stat().st_mode & 0o777 == 0o755


# ---- statuses ------------------------------------------------------------------------------------------


def _pod(phase: str, reason: str | None = None, **container: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if reason:
        status["reason"] = reason
    if container:
        status["containerStatuses"] = [{"name": "app", "state": container}]
    return {"status": status}


@pytest.mark.parametrize(
    ("pod", "deleted", "expected"),
    [
        (_pod("Pending"), False, PodOutcome("pending")),
        (_pod("Pending", waiting={"reason": "ContainerCreating"}), False, PodOutcome("pending")),
        (_pod("Running", running={"startedAt": "x"}), False, PodOutcome("running")),
        (
            _pod("Succeeded", terminated={"exitCode": 0, "reason": "Completed"}),
            False,
            PodOutcome("exited", 0, None, None, "Completed"),
        ),
        (
            _pod("Failed", terminated={"exitCode": 3, "reason": "Error"}),
            False,
            PodOutcome("exited", 3, None, None, "Error"),
        ),
        (
            _pod("Failed", terminated={"exitCode": 143, "reason": "Error"}),
            False,
            PodOutcome("exited", 143, 15, None, "Error"),
        ),
        (
            _pod("Failed", terminated={"exitCode": 137, "reason": "OOMKilled"}),
            False,
            PodOutcome("exited", -1200, 9, None, "OOMKilled"),
        ),
        (_pod("Failed", "Evicted"), False, PodOutcome("exited", -1000, None, "Evicted")),
        (_pod("Failed", "NodeLost"), False, PodOutcome("exited", -1001, None, "NodeLost")),
        (
            _pod("Failed", "OutOfnvidia.com/gpu"),
            False,
            PodOutcome("exited", -1002, None, "OutOfnvidia.com/gpu"),
        ),
        (_pod("Failed", "DeadlineExceeded"), False, PodOutcome("exited", -1004, None, "DeadlineExceeded")),
        (
            _pod("Failed", "UnexpectedAdmissionError"),
            False,
            PodOutcome("exited", -1006, None, "UnexpectedAdmissionError"),
        ),
        (
            _pod("Pending", waiting={"reason": "ImagePullBackOff", "message": "m"}),
            False,
            PodOutcome("exited", 254, None, None, "ImagePullBackOff", "m"),
        ),
        (
            _pod("Pending", waiting={"reason": "ErrImagePull"}),
            False,
            PodOutcome("exited", 254, None, None, "ErrImagePull"),
        ),
        (
            _pod(
                "Failed",
                terminated={"exitCode": 127, "reason": "ContainerCannotRun", "message": "exec: not found"},
            ),
            False,
            PodOutcome("exited", -1203, None, None, "ContainerCannotRun", "exec: not found"),
        ),
        (
            _pod(
                "Failed",
                terminated={
                    "exitCode": 128,
                    "reason": "ContainerCannotRun",
                    "message": "nvidia-container-cli: device error: unknown device id: 9",
                },
            ),
            False,
            PodOutcome(
                "exited",
                -1205,
                None,
                None,
                "ContainerCannotRun",
                "nvidia-container-cli: device error: unknown device id: 9",
            ),
        ),
        (_pod("Running", running={}), True, PodOutcome("exited", -101, None, "PodExternalDeleted")),
        ({}, True, PodOutcome("exited", -101, None, "PodExternalDeleted")),
        (
            _pod("Failed"),
            False,
            PodOutcome("exited", -300, None, None, None, "pod failed without a failed container"),
        ),
    ],
)
def test_pod_statuses_map_to_openpai_codes(pod: dict[str, Any], deleted: bool, expected: PodOutcome) -> None:
    assert interpret(pod, deleted) == expected


# ---- the client against recorded responses -------------------------------------------------------------


class Recorded:
    """An API server that answers from recorded responses and remembers what it was asked."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[tuple[int, str, str]]] = {}
        self.requests: list[tuple[str, str, dict[str, list[str]], Any]] = []

    def answer(self, method: str, path: str, status: int, file: str, name: str) -> None:
        body = (DATA / file).read_text().replace("PODNAME", name)
        # As the API server: JSON, except a pod's log, which is plain text.
        ctype = "text/plain" if file.endswith(".txt") else "application/json"
        self.routes.setdefault((method, path), []).append((status, body, ctype))

    def handler(self) -> type[BaseHTTPRequestHandler]:
        recorded = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                recorded.requests.append((self.command, url.path, parse_qs(url.query), body))
                answers = recorded.routes.get((self.command, url.path)) or [(404, "{}", "application/json")]
                status, text, ctype = answers.pop(0) if len(answers) > 1 else answers[0]
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

        return Handler


@pytest.fixture
async def api() -> AsyncIterator[tuple[Recorded, KubernetesBackend]]:
    recorded = Recorded()
    server = ThreadingHTTPServer(("127.0.0.1", 0), recorded.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = aio_client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    backend = KubernetesBackend(OPTIONS, api=aio_client.ApiClient(configuration))
    yield recorded, backend
    await backend.close()
    server.shutdown()


PODS = "/api/v1/namespaces/pai/pods"


async def test_create_watch_to_oom_and_delete(api: tuple[Recorded, KubernetesBackend]) -> None:
    recorded, backend = api
    cmd = _cmd()
    name = pod_name(cmd)
    pod = pod_manifest(cmd, {"PAI_JOB_NAME": cmd.job_key}, OPTIONS)
    secret = secret_manifest(cmd, OPTIONS, {"user.sh": "python train.py"}, {"token": "tok"})
    recorded.answer("POST", PODS, 201, "pod-created.json", name)
    recorded.answer("POST", "/api/v1/namespaces/pai/secrets", 201, "secret-created.json", name)
    recorded.answer("GET", PODS, 200, "watch-oom.jsonl", name)
    recorded.answer("DELETE", f"{PODS}/{name}", 200, "pod-deleted.json", name)

    uid = await backend.create(pod, secret)
    assert uid == "6f1c2a8e-3d4b-4c1e-9a57-0d2b8f1e7c11"
    (_, _, _, sent_pod), (_, _, _, sent_secret) = recorded.requests[:2]
    assert sent_pod == pod  # the client sent the manifest unchanged
    assert sent_secret["metadata"]["ownerReferences"][0]["uid"] == uid
    assert sent_secret["stringData"]["secrets.yaml"] == "token: tok\n"

    running: list[bool] = []
    outcome = await backend.wait_pod(name, on_running=lambda: running.append(True))
    assert outcome == PodOutcome("exited", -1200, 9, None, "OOMKilled")
    assert running == [True]
    _, path, query, _ = recorded.requests[2]
    assert path == PODS and query["watch"] == ["true"] and query["fieldSelector"] == [f"metadata.name={name}"]

    await backend.delete(name, 5)
    method, path, query, body = recorded.requests[-1]
    assert (method, path) == ("DELETE", f"{PODS}/{name}")
    assert query.get("gracePeriodSeconds") == ["5"] or (body or {}).get("gracePeriodSeconds") == 5


async def test_a_pod_created_before_is_adopted(api: tuple[Recorded, KubernetesBackend]) -> None:
    recorded, backend = api
    cmd = _cmd()
    name = pod_name(cmd)
    recorded.answer("POST", PODS, 409, "conflict.json", name)
    recorded.answer("GET", f"{PODS}/{name}", 200, "pod-created.json", name)
    recorded.answer("POST", "/api/v1/namespaces/pai/secrets", 409, "conflict.json", name)
    uid = await backend.create(pod_manifest(cmd, {}, OPTIONS), secret_manifest(cmd, OPTIONS, {}, {}))
    assert uid == "6f1c2a8e-3d4b-4c1e-9a57-0d2b8f1e7c11"
    assert [(m, p) for m, p, _, _ in recorded.requests] == [
        ("POST", PODS), ("GET", f"{PODS}/{name}"), ("POST", "/api/v1/namespaces/pai/secrets"),
    ]  # fmt: skip


async def test_an_image_that_cannot_be_pulled_ends_the_task_and_its_pod(
    api: tuple[Recorded, KubernetesBackend],
) -> None:
    recorded, backend = api
    name = pod_name(_cmd())
    recorded.answer("GET", PODS, 200, "watch-image-pull.jsonl", name)
    recorded.answer("DELETE", f"{PODS}/{name}", 200, "pod-deleted.json", name)
    outcome = await backend.wait_pod(name)
    assert (outcome.exit_code, outcome.container_reason) == (254, "ErrImagePull")
    assert "pull access denied" in outcome.message
    assert recorded.requests[-1][:2] == ("DELETE", f"{PODS}/{name}")


@pytest.mark.parametrize(
    ("file", "code", "reason"),
    [("watch-evicted.jsonl", -1000, "Evicted"), ("watch-node-lost.jsonl", -1001, "NodeLost")],
)
async def test_evictions_and_lost_nodes(
    api: tuple[Recorded, KubernetesBackend], file: str, code: int, reason: str
) -> None:
    recorded, backend = api
    name = pod_name(_cmd())
    recorded.answer("GET", PODS, 200, file, name)
    outcome = await backend.wait_pod(name)
    assert (outcome.exit_code, outcome.pod_reason) == (code, reason)


async def test_deleting_a_pod_that_is_gone_is_harmless(api: tuple[Recorded, KubernetesBackend]) -> None:
    recorded, backend = api
    name = pod_name(_cmd())
    recorded.answer("DELETE", f"{PODS}/{name}", 404, "not-found.json", name)
    await backend.delete(name, 0)
    assert recorded.requests[-1][:2] == ("DELETE", f"{PODS}/{name}")


# ---- the agent with the Kubernetes backend, on real NATS and MongoDB-wire servers ------------------------


async def test_the_agent_runs_a_task_as_a_pod(
    api: tuple[Recorded, KubernetesBackend], mongo_server: Any, tmp_path: Path
) -> None:
    import uuid

    from pai_common.bus import EVENTS_STREAM, Bus
    from pai_common.contract.events import TaskExited, TaskRunning
    from pai_common.contract.rpc import TaskLogReply, TaskLogRequest
    from pai_common.embedded import start_nats
    from pai_common.envelope import decode
    from pai_runtime.settings import RuntimeSettings
    from pai_runtime.shell import Agent

    recorded, backend = api
    nats = start_nats(tmp_path / "nats")
    node = f"k8s-{uuid.uuid4().hex[:6]}"
    settings = RuntimeSettings(
        nats_url=nats.url, mongo_url=mongo_server.url, data_dir=tmp_path / "data", node_name=node,
        force_simulated=True, backend="kubernetes", k8s_namespace="pai",
    )  # fmt: skip
    agent = Agent(settings, backend)  # the client, pointed at the recorded API server
    agent.app.name = f"rt{uuid.uuid4().hex[:8]}"
    plugins = [{"plugin": "cmd", "parameters": {"preCommands": ["echo p"]}}]
    cmd = _cmd(
        node=node, has_secrets=False, entrypoint="python train.py", plugins=plugins,
        mounts=[STORAGES[-1], STORAGES[0]],
    )  # fmt: skip
    name = pod_name(cmd)
    recorded.answer("POST", PODS, 201, "pod-created.json", name)
    recorded.answer("POST", "/api/v1/namespaces/pai/secrets", 201, "secret-created.json", name)
    recorded.answer("GET", PODS, 200, "watch-oom.jsonl", name)
    recorded.answer("GET", f"{PODS}/{name}/log", 200, "pod-log.txt", name)
    bus = await Bus.connect(nats.url, "test")
    try:
        await bus.ensure_streams()
        sub = await bus.js.subscribe("pai.evt.task.>", stream=EVENTS_STREAM, ordered_consumer=True)
        await agent.app.start()
        await bus.send_command(cmd, node)
        seen: list[Any] = []
        while not any(isinstance(e, TaskExited) for e in seen):
            msg = await sub.next_msg(timeout=20)
            seen.append(decode(msg.headers, msg.data).body)
        running = next(e for e in seen if isinstance(e, TaskRunning))
        exited = next(e for e in seen if isinstance(e, TaskExited))
        assert running.backend == "kubernetes" and running.node == node
        assert (exited.exit_code, exited.signal, exited.container_reason) == (-1200, 9, "OOMKilled")
        assert "allocating 80 GiB" in exited.log_tail
        pod = next(body for m, p, _, body in recorded.requests if (m, p) == ("POST", PODS))
        secret = next(body for m, p, _, body in recorded.requests if p.endswith("/secrets"))
        assert pod["spec"]["nodeName"] == node
        paths = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
        assert {"/mnt/host", "/mnt/n1"} <= paths
        env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
        assert env["NVIDIA_VISIBLE_DEVICES"] == "1,3" and env["FC_TASK_ATTEMPT_ID"] == "0"
        assert secret["stringData"]["user.sh"] == "python train.py"
        assert "echo p" in secret["stringData"]["pre.sh"] and "train.py" not in json.dumps(pod)
        assert "SSH barrier" in secret["stringData"]["barrier.py"]
        reply = await bus.request(
            TaskLogRequest(job_key=cmd.job_key, attempt_id=1, task_role="worker", index=2),
            TaskLogReply,
            target=node,
        )
        assert "epoch 1 loss 0.9" in reply.content
    finally:
        await agent.app.stop()
        await bus.close()
        nats.stop()


async def test_a_preempted_pod_reads_its_notice_from_its_node_folder(
    api: tuple[Recorded, KubernetesBackend], tmp_path: Path
) -> None:
    """With a notice folder on the node, each pod mounts its own subfolder read-only at NOTICE_DIR (the API
    schema accepts it); the notice is written there before the deletion that sends SIGTERM with the grace,
    and the folder goes once the pod ended. Without one, pods get no mount and no notice path."""
    recorded, plain = api
    options = PodOptions(namespace="pai", grace_period_s=5, notice_host_dir=str(tmp_path / "notices"))
    backend = KubernetesBackend(options, api=plain._api)
    cmd = _cmd()
    name = pod_name(cmd)
    pod = pod_manifest(cmd, {}, options)
    k8s_schema.validate(pod)
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "notice")
    assert volume["hostPath"] == {"path": f"{tmp_path}/notices/{name}", "type": "DirectoryOrCreate"}
    mount = next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "notice")
    assert mount == {"name": "notice", "mountPath": NOTICE_DIR, "readOnly": True}
    assert backend.paths(tmp_path).notice == f"{NOTICE_DIR}/preemption-notice.json"
    assert plain.paths(tmp_path).notice is None
    assert "notice" not in {v["name"] for v in pod_manifest(cmd, {}, OPTIONS)["spec"]["volumes"]}
    assert not await plain.notify({"pod": name}, {"deadlineMs": 1})

    assert await backend.notify({"pod": name}, {"deadlineMs": 123, "preemptor": "bob~urgent"})
    written = tmp_path / "notices" / name / "preemption-notice.json"
    assert json.loads(written.read_text()) == {"deadlineMs": 123, "preemptor": "bob~urgent"}
    recorded.answer("DELETE", f"{PODS}/{name}", 200, "pod-deleted.json", name)
    await backend.kill({"pod": name}, 20)
    method, path, query, body = recorded.requests[-1]
    assert (method, path) == ("DELETE", f"{PODS}/{name}")
    assert query.get("gracePeriodSeconds") == ["20"] or (body or {}).get("gracePeriodSeconds") == 20
    recorded.answer("GET", PODS, 200, "watch-oom.jsonl", name)
    recorded.answer("GET", f"{PODS}/{name}/log", 200, "pod-log.txt", name)
    await backend.wait({"pod": name})
    assert not written.parent.exists()


async def test_an_elastic_pods_membership_file_lives_in_its_node_folder_and_is_rewritten_there(
    api: tuple[Recorded, KubernetesBackend], tmp_path: Path
) -> None:
    """With a node folder, the membership file is written there before the pod is created (not recreated
    in its home, where nothing could change it) and every update replaces it there; without one, the
    backend says it cannot deliver an update."""
    recorded, plain = api
    options = PodOptions(namespace="pai", grace_period_s=5, notice_host_dir=str(tmp_path / "notices"))
    backend = KubernetesBackend(options, api=plain._api)
    assert backend.paths(tmp_path).membership == f"{NOTICE_DIR}/{membership.FILE_NAME}"
    assert plain.paths(tmp_path).membership is None
    cmd = _cmd(has_secrets=False)
    name = pod_name(cmd)
    first = membership.render({"PAI_MEMBERSHIP_VERSION": "0", "PAI_ELASTIC_INSTANCES_worker": "1"}, 0)
    recorded.answer("POST", PODS, 201, "pod-created.json", name)
    recorded.answer("POST", "/api/v1/namespaces/pai/secrets", 201, "secret-created.json", name)
    task = TaskFiles(entrypoint="python train.py", files={membership.FILE_NAME: (first, 0o644)})
    await backend.launch(cmd, tmp_path / "work", task, None)
    written = tmp_path / "notices" / name / membership.FILE_NAME
    assert written.read_text() == first
    sent_secret = next(b for m, p, _, b in recorded.requests if p.endswith("/secrets"))
    assert membership.FILE_NAME not in sent_secret["stringData"]["pre.sh"]  # not a copy in its home

    second = membership.render({"PAI_MEMBERSHIP_VERSION": "1", "PAI_ELASTIC_INSTANCES_worker": "2"}, 1)
    assert await backend.membership({"pod": name}, second)
    assert written.read_text() == second
    assert await backend.membership({"pod": name}, first)  # an older one never replaces a newer one
    assert written.read_text() == second
    assert not await plain.membership({"pod": name}, second)


def test_the_pod_signals_its_task_when_its_membership_file_changes(tmp_path: Path) -> None:
    """The pod's watcher (run here with bash, as the pod runs it) sends SIGWINCH to its process group once
    the file's version changes; a task that traps it re-reads the file, and one that does not survives."""
    members = tmp_path / "membership.env"
    members.write_text(membership.render({"PAI_X": "1"}, 0))
    told = tmp_path / "told"
    task = (
        f'trap \'. "$PAI_MEMBERSHIP_FILE"; echo "$PAI_X" >> {told}; exit 0\' WINCH\n'
        "for i in $(seq 200); do sleep 0.05; done\n"
    )
    (tmp_path / "task.sh").write_text(task)
    (tmp_path / "bystander.sh").write_text("sleep 3\n")
    proc = subprocess.Popen(
        # As the pod's PID 1: the phases in the foreground; here a bystander beside the task, waited for.
        ["bash", "-c", f"{MEMBERSHIP_WATCH}bash bystander.sh & b=$!; bash task.sh; wait $b"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "PAI_MEMBERSHIP_FILE": str(members)},
        start_new_session=True,  # the watcher signals its own group only: this one
    )
    try:
        time.sleep(1.5 * MEMBERSHIP_WATCH_S)
        membership.write(members, membership.render({"PAI_X": "2"}, 1))
        deadline = time.monotonic() + 10
        while not (told.exists() and told.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert told.read_text() == "2\n"
        assert proc.wait(20) == 0  # the bystander, which did not trap it, ended normally
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)  # the watcher too (in a pod it ends with PID 1)
