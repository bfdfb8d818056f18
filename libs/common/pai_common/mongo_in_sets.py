"""The embedded MongoDB-wire server matches ``$in`` over strings with a set.

SecantusDB matches ``{_id: {$in: [k ids]}}`` candidate by candidate, and each candidate against every
element of the list in turn, through its general equality (numbers across types, collations, embedded
documents, arrays): k documents cost k² comparisons in Python. The platform's hottest statements are of
that shape: a consumer's batch reads its documents by ``_id $in`` and deletes the outbox messages it
published by ``_id $in``, dozens of ids at a time under load. py-spy of the orchestrator's database server
(16 clients, 500 jobs, 2026-12-08): 25% of its busy samples in ``matches``, 15% in ``_in_candidate_matches``.

``match_in_by_set`` answers the case where every element of the ``$in`` list and every value the field
holds is a plain ``str`` and no collation applies: then SecantusDB's answer is whether one of the values
equals one of the elements (``str == str``; a ``str`` is not an array to descend into, and no bridging
applies), which a ``frozenset`` answers at once. The set is built once per list (the query's list object
is the same for every candidate). Every other case goes to SecantusDB's own ``_op_matches`` unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MARK = "_pai_in_by_set"


def _in_by_set(original: Callable[..., bool]) -> Callable[..., bool]:
    # The last list seen and its set (or None: not all plain strings). Kept as one tuple, read once: two
    # client threads may race on it, and each reads a consistent pair. Holding the list keeps its id from
    # being reused by another list while it is here.
    memo: tuple[list[Any] | None, frozenset[str] | None] = (None, None)

    def op_matches(
        values: list[Any], op: str, arg: Any, collation: Any = None, *, field: str = "", descend: bool = True
    ) -> bool:
        nonlocal memo
        if op == "$in" and collation is None and type(arg) is list and arg:
            seen, strings = memo
            if seen is not arg:
                strings = frozenset(arg) if all(type(a) is str for a in arg) else None
                memo = (arg, strings)
            if strings is not None and values and all(type(v) is str for v in values):
                return any(v in strings for v in values)
        return original(values, op, arg, collation, field=field, descend=descend)

    setattr(op_matches, MARK, True)
    return op_matches


def match_in_by_set() -> bool:
    """Install the set lookup in SecantusDB's matcher (the whole process); False, and nothing changed,
    when the matcher no longer has the function it wraps (an upgrade)."""
    from secantus import query

    current = getattr(query, "_op_matches", None)
    if current is None or not callable(current):
        log.warning("SecantusDB's matcher has no _op_matches: $in is left as it matches")
        return False
    if getattr(current, MARK, False):
        return True
    query._op_matches = _in_by_set(current)
    return True
