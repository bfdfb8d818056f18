"""The callout's settings (environment, prefix ``PAI_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from pai_common.settings import Settings


class CalloutSettings(Settings):
    # The account nkey seed (``SA...``) whose public key is nats.conf's auth_callout issuer.
    callout_issuer_seed_file: Path = Path("/etc/pai/nats-callout/seed")
    # The audience the node agents' projected tokens are bound to, and the agents' service account.
    callout_audience: str = Field(default="pai-nats", min_length=1)
    callout_service_account: str = Field(default="system:serviceaccount:pai:pai-runtime", min_length=1)
    # The Kubernetes API: in the cluster (its service account), a kubeconfig, or a plain URL (tests).
    k8s_in_cluster: bool = True
    k8s_kubeconfig: Path | None = None
    k8s_host: str | None = None
