"""Every cluster config the project ships loads into the allocator and names the nodes it deploys."""

from __future__ import annotations

from pathlib import Path

import yaml

from pai_scheduler.cluster_source import load_cluster
from pai_scheduler.hived.allocator import HivedAllocator
from pai_scheduler.hived.config import load_hived_config

ROOT = Path(__file__).resolve().parents[3]


def test_compose_cluster_names_the_compose_runtime_agents() -> None:
    config = load_cluster(ROOT / "deploy" / "compose" / "cluster.csv")
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "compose.yaml").read_text())
    agents = {
        svc["environment"]["PAI_NODE_NAME"]
        for svc in compose["services"].values()
        if isinstance(svc.get("environment"), dict) and "PAI_NODE_NAME" in svc["environment"]
    }
    alloc = HivedAllocator(config)
    assert set(alloc.cluster.nodes) == agents
    assert [vc.name for vc in config.virtual_clusters] == ["default"]


def test_kubernetes_example_cluster_loads() -> None:
    doc = yaml.safe_load(
        (ROOT / "deploy" / "k8s" / "base" / "platform" / "scheduler-cluster.yaml").read_text()
    )
    config = load_hived_config(doc["data"]["cluster.yaml"])
    alloc = HivedAllocator(config)
    assert sorted(alloc.cluster.nodes) == ["gpu-node-0", "gpu-node-1"]
