"""The orchestrator's clock for its timers, which notices jumps of the wall clock.

The timers (gang allocation timeout, retry back-off, the wait for a stopped attempt's exit reports) are
wall-clock deadlines stored in each framework, so that a restarted orchestrator, or one on another host,
picks them up. A jump of the wall clock (a manual set, an NTP step, a VM resumed) would fire them early
(forward: a gang "timed out" that waited a second; a stopped task "assumed stopped" while it still runs)
or hold them (backward: a retry delayed by the jump). So every reading of the wall clock is compared with
the monotonic clock: their difference (the *skew*) moves only when the wall clock jumps (or slews).
Each stored framework carries the skew its timers were set under (``Stamp``); the shell moves the timers
of the frameworks whose stamp differs from the current skew by the change (``shift_ms``), so that each
timer keeps the time it had left. A framework stamped by another run (an earlier process) is not moved:
the wall clock is then the only reference the two share.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

# A change of the skew below this is the clock's ordinary slew (and rounding), not a jump.
JUMP_TOLERANCE_MS = 1000


@dataclass(frozen=True)
class Stamp:
    """The run (process) and the skew under which a framework's timers were set."""

    run: str
    skew_ms: int

    def as_doc(self) -> dict[str, object]:
        return {"run": self.run, "skew_ms": self.skew_ms}


class TimerClock:
    """Wall-clock milliseconds for timers and timestamps, and the jumps seen so far (the clocks are
    injected: tests move them by hand)."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        run: str | None = None,
    ) -> None:
        self._wall = wall
        self._mono = mono
        self.run = run or uuid.uuid4().hex
        self._skew_ms = self._read_skew()[1]

    def _read_skew(self) -> tuple[int, int]:
        wall_ms = int(self._wall() * 1000)
        return wall_ms, wall_ms - int(self._mono() * 1000)

    def now_ms(self) -> int:
        """The wall clock; a jump since the last reading moves the current skew (see ``stamp``)."""
        wall_ms, skew = self._read_skew()
        if abs(skew - self._skew_ms) >= JUMP_TOLERANCE_MS:
            self._skew_ms = skew
        return wall_ms

    def stamp(self) -> Stamp:
        """The stamp of a timer set from the latest ``now_ms`` reading."""
        return Stamp(self.run, self._skew_ms)

    def shift_ms(self, stored: Stamp | None) -> int:
        """How far timers set under ``stored`` move to keep their time left (0: not at all)."""
        self.now_ms()
        if stored is None or stored.run != self.run:
            return 0
        delta = self._skew_ms - stored.skew_ms
        return delta if abs(delta) >= JUMP_TOLERANCE_MS else 0


def stamp_of(doc: dict[str, object]) -> Stamp | None:
    """The stamp a stored framework document carries (None: stored by a version without stamps)."""
    raw = doc.get("clock")
    if not isinstance(raw, dict):
        return None
    run, skew = raw.get("run"), raw.get("skew_ms")
    if not isinstance(run, str) or not isinstance(skew, int):
        return None
    return Stamp(run, skew)
