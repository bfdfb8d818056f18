"""The TokenReview: the Kubernetes API server says whose a token is (the official client, asyncio API).

The callout's service account needs ``create`` on ``tokenreviews`` (cluster-wide: the built-in
``system:auth-delegator`` ClusterRole), nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes.aio import client as _client
from kubernetes.aio import config as _config

from pai_auth.callout.decision import Refused, Review

# The client's own annotations are partial; this module talks to it untyped.
client: Any = _client
config: Any = _config


async def connect(in_cluster: bool, kubeconfig: Path | None = None, host: str | None = None) -> Any:
    """The client's ApiClient: in the cluster (its service account), from a kubeconfig, or a plain host."""
    configuration = client.Configuration()
    if host:
        configuration.host = host
    elif in_cluster:
        config.load_incluster_config(client_configuration=configuration)
    else:
        await config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None, client_configuration=configuration
        )
    return client.ApiClient(configuration)


class TokenReviewer:
    def __init__(self, api: Any, audience: str) -> None:
        self._api = api
        self._auth = client.AuthenticationV1Api(api)
        self.audience = audience

    async def review(self, token: str) -> Review:
        """What the API server says of ``token`` for our audience; Refused when it cannot be asked (the
        connection is refused then, never let in unchecked)."""
        body = client.V1TokenReview(
            api_version="authentication.k8s.io/v1",
            kind="TokenReview",
            spec=client.V1TokenReviewSpec(token=token, audiences=[self.audience]),
        )
        try:
            answer = await self._auth.create_token_review(body, _request_timeout=5)
        except Exception as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise Refused(f"the Kubernetes API server could not review the token: {reason}") from None
        status = answer.status
        if status is None:
            raise Refused("the Kubernetes API server answered the review without a status")
        user = status.user
        return Review(
            authenticated=bool(status.authenticated),
            error=status.error or "",
            audiences=list(status.audiences or []),
            username=(user.username if user else None) or "",
            extra={k: list(v or []) for k, v in ((user.extra if user else None) or {}).items()},
        )

    async def close(self) -> None:
        await self._api.close()
