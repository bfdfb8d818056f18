"""Where the scheduler's cluster comes from: a HiveD config (YAML) or a node inventory (CSV)."""

from __future__ import annotations

from pathlib import Path

from pai_scheduler.hived.config import ClusterConfig, load_hived_config, parse_inventory_csv
from pai_scheduler.hived.errors import ConfigError


def load_cluster(path: Path) -> ClusterConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the cluster config {path}: {exc.strerror}") from None
    if path.suffix.lower() == ".csv":
        return parse_inventory_csv(text)
    return load_hived_config(text)
