"""A consumer's batch in hand, kept from being handed out again while it is worked on.

JetStream gives a delivered message to the consumer again when it is not acknowledged within the
consumer's ``ack_wait``. That one setting decides two things at once: how soon the messages a killed
service held come back (it cannot ack them any more), and how long a live service may work on a batch
before the server hands it out again under it, to another replica of the service waiting with a pull
request of its own (Kubernetes runs two). A long ``ack_wait`` (60 s, as before) makes every crash stall the
jobs whose messages were in hand for a minute; a short one alone would hand out again a batch that is
merely slow (a database restarting and its writes retried, a saturated machine), to be worked on twice at
once.

So ``ack_wait`` is short, and while a batch is in hand longer than ``every_s``, its messages not yet
acknowledged get an in-progress acknowledgement (``+WPI``, which restarts their ``ack_wait``) every
``every_s``. A live service keeps what it holds; a dead one stops telling, and the server hands its
messages out again ``ack_wait`` after its last word. A batch handled within ``every_s`` (nearly all of
them) costs a timer set and cancelled, and nothing on the bus.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from nats.aio.msg import Msg

log = logging.getLogger(__name__)


class HeldMessages:
    """Use as ``with HeldMessages(msgs, every_s): <handle them>``."""

    def __init__(self, msgs: Sequence[Msg], every_s: float) -> None:
        self._msgs = msgs
        self._every_s = every_s
        self._timer: asyncio.TimerHandle | None = None
        self._telling: asyncio.Task[None] | None = None

    def __enter__(self) -> HeldMessages:
        self._timer = asyncio.get_running_loop().call_later(self._every_s, self._due)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._telling is not None and not self._telling.done():
            self._telling.cancel()

    def _due(self) -> None:
        loop = asyncio.get_running_loop()
        # One telling at a time: a bus too slow to take the last one's acks gets no second one on top.
        if self._telling is None or self._telling.done():
            self._telling = loop.create_task(self._tell())
        self._timer = loop.call_later(self._every_s, self._due)

    async def _tell(self) -> None:
        for msg in self._msgs:
            if msg.is_acked:  # acked, nak'ed or terminated: nothing more to say about it
                continue
            try:
                await msg.in_progress()
            except Exception as exc:  # a lost connection: the server hands it out again, as after a crash
                log.warning("in-progress ack failed", extra={"error": repr(exc)})
                return
