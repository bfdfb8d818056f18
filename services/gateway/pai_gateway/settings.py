from __future__ import annotations

from pydantic import Field

from pai_common.settings import Settings


class GatewaySettings(Settings):
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=9186, ge=0, le=65535)
    # A listening socket handed down by the launcher (`pai up` binds the port it picks and keeps it, so no
    # other process can take it before the gateway starts): served instead of binding gateway_port.
    gateway_fd: int | None = Field(default=None, ge=0)
    # OpenPAI's body parsers stop at 100 kB; a job YAML of a few hundred tasks still fits in 256 KiB.
    max_body_bytes: int = 256 * 1024
    rpc_timeout_s: float = 5.0
    # A submission may wait this long for its turn in the jobs service (then it is refused with 429 and
    # nothing done); the gateway waits up to submit_timeout_s for the answer, which is therefore the
    # truth: 202 only when the job exists, an error only when it does not.
    submit_wait_s: float = Field(default=20.0, ge=0, le=600)
    submit_timeout_s: float = Field(default=60.0, gt=0)
    identity_cache_s: float = 5.0
    # Per-user limits of OpenPAI's deployed rest-server (per gateway replica): submissions per hour, lists
    # per minute; 0 turns a limit off. The job stream polls the jobs service at this interval.
    rate_limit_submit_per_hour: int = Field(default=3600, ge=0)
    rate_limit_list_per_min: int = Field(default=120, ge=0)
    job_stream_poll_s: float = Field(default=1.0, gt=0)
    # Slow clients (slow-loris): a request's head must arrive within header_timeout_s and its body within
    # body_timeout_s (408); an idle keep-alive connection closes after keep_alive_s; past max_connections
    # open connections (job streams included) new requests get 503.
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    keep_alive_s: float = Field(default=5.0, gt=0)
    max_connections: int = Field(default=2048, ge=1)
    # The web portal's own address (PAI_PORTAL_URL); the gateway serves it on the API's origin by relaying
    # every non-API path there. Empty: no portal, those paths answer 404.
    portal_url: str = ""
