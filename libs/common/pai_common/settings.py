"""Settings read from the environment (prefix ``PAI_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """What every service reads at start. Each service may subclass it for its own knobs."""

    model_config = SettingsConfigDict(env_prefix="PAI_", extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    # A CA bundle that signs the NATS servers' certificates (a `tls://` URL then verifies against it).
    nats_ca_file: Path | None = None
    # A file holding the token this process presents to NATS instead of a password (a node agent on
    # Kubernetes: its pod's projected service-account token, which the auth callout turns into the node's
    # own user). Read again at every (re)connection, as the kubelet renews it.
    nats_token_file: Path | None = None
    mongo_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    data_dir: Path = Path(".pai")
    # Port of the service's own /metrics, /healthz and /readyz; 0 picks a free port.
    http_port: int = 0
    http_host: str = "127.0.0.1"
    log_level: str = "INFO"
    # Bus behaviour shared by all consumers.
    max_deliver: int = Field(default=5, ge=1)
    nak_base_delay_s: float = Field(default=0.5, gt=0)
    fetch_batch: int = Field(default=64, ge=1)
    stop_timeout_s: float = Field(default=15.0, gt=0)
    # Where spans go: "none", "console" or "otlp"; unset, the OTEL_* environment decides (telemetry.py).
    otel_exporter: str | None = None
    # How often a service samples its consumers' lag and its outbox backlog for /metrics.
    metrics_sample_s: float = Field(default=10.0, gt=0)
    # Copies JetStream keeps of every stream: 1 for one server, 3 for a three-server cluster (survives the
    # loss of one). Applied when a stream is created and when it already exists with another count.
    stream_replicas: int = Field(default=1, ge=1, le=5)
    # False where this process's NATS user may not create streams (a node agent): it waits for them.
    create_streams: bool = True

    def bus_user(self, service: str) -> str | None:
        """Who this process is on the bus when its URL names no user (token authentication): its inbox
        is that user's. None: the URL's user."""
        return None

    def database_name(self, service: str) -> str:
        return f"pai_{service}"
