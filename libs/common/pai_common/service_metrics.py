"""What every service samples about its own plumbing for /metrics: consumer lag and outbox backlog."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pai_common.bus import Bus
from pai_common.consumer import DurableConsumer
from pai_common.metrics import CONSUMER_ACK_PENDING, CONSUMER_PENDING, OUTBOX_BACKLOG
from pai_common.outbox import Outbox

log = logging.getLogger(__name__)


async def sample_once(bus: Bus, outbox: Outbox, consumers: Sequence[DurableConsumer]) -> None:
    for consumer in consumers:
        info = await bus.js.consumer_info(consumer.spec.stream, consumer.spec.durable)
        CONSUMER_PENDING.labels(consumer.spec.durable).set(info.num_pending or 0)
        CONSUMER_ACK_PENDING.labels(consumer.spec.durable).set(info.num_ack_pending or 0)
    OUTBOX_BACKLOG.set(await outbox.collection.count_documents({}))


async def sample_forever(
    bus: Bus, outbox: Outbox, consumers: Sequence[DurableConsumer], every_s: float
) -> None:
    while True:
        try:
            await sample_once(bus, outbox, consumers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the bus or the database is away: the next round tries again
            log.debug("service metrics not sampled", extra={"error": repr(exc)})
        await asyncio.sleep(every_s)
