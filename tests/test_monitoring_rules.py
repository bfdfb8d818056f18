"""The shipped monitoring files, offline: alert rules checked and unit-tested by promtool, dashboards and
the Kubernetes component in sync with their generator, the compose override and Alertmanager
configurations valid. (That every metric they query exists is checked against a running platform in
tests/acceptance/test_monitoring.py.)"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "rules"
COMPONENT = REPO / "deploy" / "k8s" / "components" / "monitoring"


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, (
        f"{name} is missing: apt-get install prometheus prometheus-alertmanager (requirements-system.txt)"
    )
    return found


def run(*argv: str, cwd: Path | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=120)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("monitoring_generate", MONITORING / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alerts() -> list[dict[str, Any]]:
    rules = []
    for path in sorted(RULES.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules += [r for r in group["rules"] if "alert" in r]
    return rules


def test_promtool_accepts_the_rules() -> None:
    out = run(tool("promtool"), "check", "rules", *map(str, sorted(RULES.glob("*.rules.yml"))))
    assert "SUCCESS: 10 rules found" in out


def test_rules_pass_their_unit_tests_on_synthetic_series() -> None:
    out = run(tool("promtool"), "test", "rules", "pai-alerts.test.yml", cwd=RULES)
    assert "SUCCESS" in out


def test_every_rule_is_unit_tested_and_says_what_it_is() -> None:
    tested = yaml.safe_load((RULES / "pai-alerts.test.yml").read_text())
    covered = {t["alertname"] for test in tested["tests"] for t in test["alert_rule_test"] if t["exp_alerts"]}
    names = {r["alert"] for r in alerts()}
    # The alerts the issue names: node lost, GPU bad / ECC, GPU idle, retried, VC queue stuck, disk,
    # consumer lag, dead letters, service down.
    assert names == {
        "PaiNodeLost",
        "PaiGpuBad",
        "PaiGpuEccErrors",
        "PaiJobGpuIdle",
        "PaiJobRetriedRepeatedly",
        "PaiVcQueueStuck",
        "PaiNodeDiskAlmostFull",
        "PaiBusConsumerLag",
        "PaiDeadLetters",
        "PaiServiceDown",
    }
    assert covered == names, f"fired by no unit test: {sorted(names - covered)}"
    for rule in alerts():
        assert rule["labels"]["severity"] in {"warning", "error", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        if "job_name" in rule["expr"]:
            # The labels the alert handler acts on and GET /api/v2/alerts filters by.
            assert re.search(r"by \(job_name, username", rule["expr"]), rule["alert"]


def test_generated_files_are_in_sync_with_their_generator() -> None:
    gen = generator()
    stale = [
        str(p.relative_to(REPO))
        for p, text in gen.outputs().items()
        if not p.exists() or p.read_text() != text
    ]
    assert not stale, f"run python deploy/monitoring/generate.py: {stale}"


def test_dashboards_are_grafana_dashboards_with_queries() -> None:
    dashboards = {
        p.name: json.loads(p.read_text()) for p in sorted((MONITORING / "dashboards").glob("*.json"))
    }
    assert set(dashboards) == {
        "pai-cluster.json",
        "pai-virtual-cluster.json",
        "pai-node.json",
        "pai-job.json",
        "pai-platform.json",
    }
    assert len({d["uid"] for d in dashboards.values()}) == len(dashboards)
    for name, d in dashboards.items():
        variables = {v["name"] for v in d["templating"]["list"]}
        assert "datasource" in variables, name
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in d["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}", (name, panel["title"])
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), (name, panel["title"])
            for t in panel["targets"]:
                used = set(re.findall(r"\$(\w+)", t["expr"]))
                assert used <= variables, (name, panel["title"], used - variables)
    job = dashboards["pai-job.json"]
    assert [v["name"] for v in job["templating"]["list"]] == ["datasource", "job_name"]


def test_kubernetes_component_matches_the_rules_and_the_base() -> None:
    kustomization = yaml.safe_load((COMPONENT / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    for resource in kustomization["resources"]:
        assert (COMPONENT / resource).exists(), resource
    rule = yaml.safe_load((COMPONENT / "prometheus-rule.yaml").read_text())
    shipped = [g for p in sorted(RULES.glob("*.rules.yml")) for g in yaml.safe_load(p.read_text())["groups"]]
    assert rule["kind"] == "PrometheusRule" and rule["spec"]["groups"] == shipped
    base = [
        doc
        for path in (REPO / "deploy" / "k8s").rglob("*.yaml")
        if "components" not in path.parts
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and "kind" in doc and "metadata" in doc
    ]
    names = {(d["kind"], d["metadata"]["name"]) for d in base}
    for patch in kustomization["patches"]:
        assert (patch["target"]["kind"], patch["target"]["name"]) in names, patch["target"]
    am = yaml.safe_load((COMPONENT / "alertmanager-config.yaml").read_text())
    url = am["spec"]["receivers"][0]["webhookConfigs"][0]["url"]
    gateway = next(d for d in base if d["kind"] == "Service" and d["metadata"]["name"] == "gateway")
    port = next(p["port"] for p in gateway["spec"]["ports"] if p["name"] == "http")
    assert url == f"http://gateway.{gateway['metadata']['namespace']}.svc:{port}/api/v2/alerts/webhook"
    actions = yaml.safe_load((COMPONENT / "alert-actions.yaml").read_text())
    assert actions["data"]["alert-actions.yaml"] == (MONITORING / "alert-actions.yaml").read_text()


def test_compose_override_and_alertmanager_configurations_are_valid() -> None:
    override = yaml.safe_load((MONITORING / "compose.yaml").read_text())
    project = REPO / "deploy" / "compose"  # compose resolves an override's paths from the first file's folder
    for service in override["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                if source == "./alertmanager-token":
                    continue  # the operator's secret, kept out of version control
                assert (project / source).resolve().exists(), volume
    run(tool("promtool"), "check", "config", str(MONITORING / "compose" / "prometheus.yml"))
    run(tool("amtool"), "check-config", str(MONITORING / "compose" / "alertmanager.yml"))
    # The same processes as the plain dev cluster's Prometheus scrapes.
    plain = yaml.safe_load((project / "prometheus.yml").read_text())
    ours = yaml.safe_load((MONITORING / "compose" / "prometheus.yml").read_text())

    def targets(config: dict[str, Any]) -> set[str]:
        return {
            t
            for job in config["scrape_configs"]
            for sc in job.get("static_configs", [])
            for t in sc["targets"]
        }

    assert targets(ours) == targets(plain)
    assert "deploy/compose/alertmanager-token" in (REPO / ".gitignore").read_text()


@pytest.mark.parametrize("stack", ["pai up", "compose"])
def test_alertmanager_posts_to_the_alert_handler_with_a_bearer_token(stack: str) -> None:
    if stack == "compose":
        config = yaml.safe_load((MONITORING / "compose" / "alertmanager.yml").read_text())
    else:
        from pai_cli.monitoring_stack import alertmanager_config

        config = alertmanager_config("http://127.0.0.1:9186", Path("/data/monitoring/alertmanager-token"))
    hook = config["receivers"][0]["webhook_configs"][0]
    assert hook["url"].endswith("/api/v2/alerts/webhook") and hook["send_resolved"] is True
    assert hook["http_config"]["authorization"]["type"] == "Bearer"
    assert "credentials_file" in hook["http_config"]["authorization"]  # the token is never inline
    assert 0 < hook["max_alerts"] <= 200  # a notification fits the gateway's 256 KiB body limit
    assert config["route"]["receiver"] == config["receivers"][0]["name"]
