"""How values read on a page (times, durations, sizes): Jinja filters. Pure."""

from __future__ import annotations

import datetime as dt
from typing import Any

# An en dash for "no value", as the tables show it.
NONE = "\u2013"


def when(value: Any) -> str:
    """A time as UTC: epoch milliseconds (the job's times), or ISO 8601 text (the events' timestamps, as
    OpenPAI's API gives them); an en dash for anything else."""
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return NONE
        at = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)
    elif isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        at = dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    else:
        return NONE
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(start_ms: Any, end_ms: Any, now_ms: float) -> str:
    if not isinstance(start_ms, int | float) or start_ms <= 0:
        return NONE
    end = end_ms if isinstance(end_ms, int | float) and end_ms > 0 else now_ms
    seconds = max(0, int((end - start_ms) / 1000))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def gpu_indexes(mask: Any) -> str:
    """OpenPAI's `containerGpus` bit mask (bit i set: GPU i) as the indexes a person reads: "2,3"."""
    if isinstance(mask, bool) or not isinstance(mask, int) or mask < 0:
        return NONE
    indexes = [str(i) for i in range(mask.bit_length()) if mask >> i & 1]
    return ",".join(indexes) or NONE


def state_class(state: Any) -> str:
    """A CSS class per job or task state (one word, from a fixed set: never user text)."""
    known = {"WAITING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED", "STOPPING", "UNKNOWN"}
    text = str(state or "UNKNOWN").upper()
    return "state-" + (text.lower() if text in known else "unknown")
