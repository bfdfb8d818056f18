"""Which storages a submitted job asks for (extras.storages, the teamwise_storage plugin, prerequisites
pointing into a storage) and the paths its commands see."""

from __future__ import annotations

import pytest

from pai_common.contract.types import StorageMount
from pai_common.errors import InvalidProtocolError
from pai_jobs.protocol import parse_job
from pai_jobs.storages import referenced, requested, with_mounts

JOB = """protocolVersion: 2
name: s
type: job
prerequisites:
  - {type: dockerimage, name: img, uri: "python:3.11"}
  - {type: data, name: mnist, uri: ["storage://team/datasets/mnist"]}
  - {type: output, name: out, uri: "storage://scratch/runs/1"}
  - {type: data, name: web, uri: ["https://example.com/x.tgz"]}
taskRoles:
  worker:
    instances: 1
    dockerImage: img
    data: mnist
    output: out
    resourcePerInstance: {cpu: 1, memoryMB: 512, gpu: 0}
    commands:
      - python train.py --data <% $data.uri[0] %> --out <% $output.uri %>
"""


def test_storages_named_by_extras_or_the_teamwise_plugin_or_none() -> None:
    assert requested({}) is None
    assert requested({"extras": {"storages": []}}) is None  # OpenPAI: the user's default storages
    assert requested({"extras": {"storages": [{"name": "a", "mountPath": "/d"}]}}) == [
        {"name": "a", "mountPath": "/d"}
    ]
    plugin = {"plugin": "teamwise_storage", "parameters": {"storageConfigNames": ["a", "b", "a"]}}
    assert requested({"extras": {"com.microsoft.pai.runtimeplugin": [plugin]}}) == [
        {"name": "a"},
        {"name": "b"},
    ]
    bad = {"plugin": "teamwise_storage", "parameters": {"storageConfigNames": "a"}}
    with pytest.raises(InvalidProtocolError, match="storageConfigNames"):
        requested({"extras": {"com.microsoft.pai.runtimeplugin": [bad]}})


def test_prerequisites_pointing_into_storages_give_paths_inside_the_task() -> None:
    parsed = parse_job(JOB, "ann", 1)
    assert referenced(parsed.raw) == ["team", "scratch"]
    rendered = parsed.spec.task_roles[0].entrypoint
    assert "storage://team/datasets/mnist" in rendered  # $data keeps rendering the URI
    mounts = [
        StorageMount(name="team", type="nfs", mount_path="/mnt/team", data={"server": "h", "path": "/t"}),
        StorageMount(name="scratch", type="local", mount_path="/scratch/", data={"path": "/s"}),
    ]
    spec = with_mounts(parsed.spec, mounts)
    assert spec.task_roles[0].entrypoint == (
        "python train.py --data /mnt/team/datasets/mnist --out /scratch/runs/1"
    )
    assert [m.name for m in spec.storages] == ["team", "scratch"]
