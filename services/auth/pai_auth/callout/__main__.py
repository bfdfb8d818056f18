"""``python -m pai_auth.callout``: the NATS auth callout responder for node agents on Kubernetes.

It talks to NATS (as its own static user, allowed only to answer ``$SYS.REQ.USER.AUTH``) and to the
Kubernetes API server (TokenReview); it has no database. /healthz and /readyz on ``PAI_HTTP_PORT``.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from pai_auth.callout import jwt
from pai_auth.callout.decision import Policy
from pai_auth.callout.responder import CalloutResponder
from pai_auth.callout.review import TokenReviewer, connect
from pai_auth.callout.settings import CalloutSettings
from pai_common import event_loop
from pai_common.bus import Bus
from pai_common.health import HealthServer
from pai_common.logs import setup_logging

log = logging.getLogger("pai.auth.callout")
NAME = "auth-callout"


async def serve(settings: CalloutSettings, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    seed = settings.callout_issuer_seed_file.read_text().strip()
    jwt.keypair(seed)  # a clear error at start, not at the first connection
    reviewer = TokenReviewer(
        await connect(settings.k8s_in_cluster, settings.k8s_kubeconfig, settings.k8s_host),
        settings.callout_audience,
    )
    bus = await Bus.connect(settings.nats_url, NAME, settings.nats_ca_file)
    policy = Policy(settings.callout_audience, settings.callout_service_account)
    responder = CalloutResponder(bus.nc, reviewer, policy, seed)
    await responder.start()
    health = HealthServer(settings.http_host, settings.http_port, lambda: bus.nc.is_connected)
    await health.start()
    log.info("auth callout ready", extra={"issuer": jwt.public_key(seed), "audience": policy.audience})
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await health.stop()
        await responder.stop()
        await bus.close()
        await reviewer.close()


async def _main(settings: CalloutSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop)


def main() -> None:
    settings = CalloutSettings()
    setup_logging(NAME, settings.log_level)
    event_loop.run(_main(settings))


if __name__ == "__main__":
    main()
