"""Prometheus and Alertmanager for the platform `pai up` started, on this machine.

``write_config`` (every `pai up`) writes ``<data dir>/monitoring/prometheus.yml``: it scrapes every
process of the platform through file-based service discovery (each process writes its target to
``<data dir>/run/targets/<name>.json`` when it starts, so restarts on new ports are followed) and loads
the shipped alert rules, copied to ``<data dir>/monitoring/rules/``. Point any Prometheus at it.

``start`` (`pai up --monitoring`) runs Debian's ``prometheus`` and ``prometheus-alertmanager`` (or the
upstream ``alertmanager``) on loopback ports with that configuration. Alertmanager posts every alert to
the platform's alert handler (the gateway's webhook route) with an admin's application token, kept in
``<data dir>/monitoring/alertmanager-token`` (mode 0600), never on a command line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from pai_common.embedded import ServerProcess, die_with_parent, free_port, wait_for_port

RULES_SOURCE = Path(__file__).resolve().parents[3] / "deploy" / "monitoring" / "rules"
PROMETHEUS = ("prometheus",)
ALERTMANAGER = ("prometheus-alertmanager", "alertmanager")


class MonitoringUnavailable(RuntimeError):
    """Prometheus or Alertmanager is not installed here."""


def find_binary(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def prometheus_config(data_dir: Path, rules: bool, alertmanager_port: int | None) -> dict[str, object]:
    config: dict[str, object] = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "scrape_configs": [
            {
                "job_name": "pai",
                "metrics_path": "/metrics",
                # One file per process; its labels are `service` and `process` (the node name for agents).
                "file_sd_configs": [{"files": [str(data_dir / "run" / "targets" / "*.json")]}],
            }
        ],
    }
    if rules:
        config["rule_files"] = [str(data_dir / "monitoring" / "rules" / "*.rules.yml")]
    if alertmanager_port is not None:
        targets = [f"127.0.0.1:{alertmanager_port}"]
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": targets}]}]}
    return config


def alertmanager_config(gateway_url: str, token_file: Path) -> dict[str, object]:
    return {
        "route": {
            "receiver": "pai-alert-handler",
            "group_by": ["alertname", "job_name", "node"],
            "group_wait": "10s",
            "group_interval": "1m",
            "repeat_interval": "4h",
        },
        "receivers": [
            {
                "name": "pai-alert-handler",
                "webhook_configs": [
                    {
                        "url": f"{gateway_url}/api/v2/alerts/webhook",
                        "send_resolved": True,
                        # A notification must fit the gateway's body limit (256 KiB).
                        "max_alerts": 200,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials_file": str(token_file)}
                        },
                    }
                ],
            }
        ],
    }


def alertmanager_token(url: str, admin_token: str | None, token_file: Path) -> str:
    """An admin's application token for Alertmanager: the one kept from an earlier run while it still
    works, otherwise a new one (application tokens do not expire; revoking one stops its Alertmanager)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        if token_file.exists():
            kept = token_file.read_text().strip()
            check = client.get("/api/v2/tokens/check", headers={"Authorization": f"Bearer {kept}"})
            if kept and check.status_code == 200 and check.json().get("admin"):
                return kept
        if admin_token is None:
            raise MonitoringUnavailable(
                "Alertmanager needs an admin's application token and the CLI could not log in (basic"
                f" login is off): write one (`pai token create` as an admin) to {token_file}"
            )
        created = client.post(
            "/api/v2/tokens/application", headers={"Authorization": f"Bearer {admin_token}"}
        )
        if created.status_code != 200:
            raise MonitoringUnavailable(f"no application token for Alertmanager: {created.text}")
        return str(created.json()["token"])


@dataclass
class MonitoringStack:
    data_dir: Path
    gateway_url: str
    prometheus_port: int = 0
    alertmanager_port: int = 0
    servers: list[ServerProcess] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.data_dir / "monitoring"

    @property
    def prometheus_yml(self) -> Path:
        return self.folder / "prometheus.yml"

    @property
    def token_file(self) -> Path:
        return self.folder / "alertmanager-token"

    def write_config(self, alerting: bool = False) -> Path:
        """Write prometheus.yml (and copy the rules); returns its path."""
        # Written again when --monitoring starts Prometheus: each file is replaced whole, so a reader
        # (Prometheus reloading, a script) never meets a missing or half-written one.
        rules = self.folder / "rules"
        have_rules = RULES_SOURCE.is_dir()
        shipped = sorted(RULES_SOURCE.glob("*.rules.yml")) if have_rules else []
        rules.mkdir(parents=True, exist_ok=True)
        for source in shipped:
            _replace(rules / source.name, source.read_text())
        for stale in set(rules.glob("*")) - {rules / s.name for s in shipped}:
            stale.unlink()
        port = self.alertmanager_port if alerting and self.alertmanager_port else None
        text = yaml.safe_dump(prometheus_config(self.data_dir, have_rules, port), sort_keys=False)
        header = "# Written by `pai up`: every process of this platform, the shipped alert rules.\n"
        if not have_rules:
            header += f"# No alert rules: {RULES_SOURCE} is missing (the repository's deploy/monitoring).\n"
        _replace(self.prometheus_yml, header + text)
        return self.prometheus_yml

    def start(self, token: str, timeout_s: float = 60.0) -> None:
        """Start Prometheus and Alertmanager; MonitoringUnavailable when either is not installed."""
        prometheus = find_binary(PROMETHEUS)
        alertmanager = find_binary(ALERTMANAGER)
        missing = [
            n for n, b in (("prometheus", prometheus), ("prometheus-alertmanager", alertmanager)) if not b
        ]
        if missing or prometheus is None or alertmanager is None:
            raise MonitoringUnavailable(
                f"{' and '.join(missing)} not installed (apt-get install prometheus prometheus-alertmanager)"
            )
        self.prometheus_port = self.prometheus_port or free_port()
        self.alertmanager_port = self.alertmanager_port or free_port()
        self.write_config(alerting=True)
        self.token_file.write_text(token)
        os.chmod(self.token_file, 0o600)
        am_yml = self.folder / "alertmanager.yml"
        am_yml.write_text(
            yaml.safe_dump(alertmanager_config(self.gateway_url, self.token_file), sort_keys=False)
        )
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            self._spawn(
                "alertmanager",
                [
                    alertmanager,
                    f"--config.file={am_yml}",
                    f"--storage.path={self.folder / 'alertmanager-data'}",
                    f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                    "--cluster.listen-address=",  # one instance: no gossip port
                ],
                self.alertmanager_port,
                timeout_s,
            )
            self._spawn(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={self.prometheus_yml}",
                    f"--storage.tsdb.path={self.folder / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                ],
                self.prometheus_port,
                timeout_s,
            )
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, argv: list[str], port: int, timeout_s: float) -> None:
        log_path = self.data_dir / "logs" / f"{name}.log"
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # A `pai up` killed with SIGKILL leaves no Prometheus behind, as with its other children.
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        self.servers.append(ServerProcess(name, f"http://127.0.0.1:{port}", port, proc, log_path))
        wait_for_port(port, timeout_s, proc)

    @property
    def urls(self) -> dict[str, str]:
        return {s.name: s.url for s in self.servers}

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()


def _replace(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file beside it and a rename: readers see old or new, whole."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
