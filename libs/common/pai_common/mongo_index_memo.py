"""The embedded MongoDB-wire server reads a collection's index definitions once a statement, not seven times.

SecantusDB keeps each collection's index definitions as rows of one WiredTiger table and reads them
afresh every time it needs them: a one-document update walks them for the index list, the partial
filters, the multikey flags, and four times for the index options (the unique check, the geo check,
the old entries' removal, the new entries' write). Each walk is a cursor search and a BSON decode per
index. Under a burst of jobs that was a quarter of the jobs database server's CPU (py-spy, issue 17):
its job list collection has nine indexes besides ``_id``, and each job updates its entry once or twice.

``memoize_index_reads`` lets each statement that reads or writes documents walk a collection's
definitions once and reuse them until it ends. What keeps that exact:

- The memo lives for one attempt of one statement on one thread. A write is read inside that attempt's
  storage transaction, so the memo holds what that transaction's snapshot holds; a read outside a
  transaction keeps the definitions it saw first, as a snapshot would. A write-conflict retry is a new
  attempt with a new memo (SecantusDB's retry wrapper stays outside it).
- The one index-table write a document statement makes, flagging an index multikey, drops the
  collection's memo, so any later walk of the statement reads that write. Index commands are
  statements of their own, never inside one of these.
- Every caller copies what it changes (``dict(opts)``); the memo's rows are not handed out elsewhere.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

IndexRow = tuple[str, dict[str, Any], dict[str, Any]]
Memo = dict[tuple[int, str, str], list[IndexRow]]

# Statements that write documents, each an attempt that SecantusDB retries on a write conflict, and the
# one that reads them: each walks the index definitions several times.
WRITES = (
    "_insert_chunk",
    "_update_matching_single_txn",
    "_update_chunk",
    "_delete_matching_single_txn",
    "_delete_chunk",
)
READ = "find_matching"

_local = threading.local()


def _memo() -> Memo | None:
    memo: Memo | None = getattr(_local, "memo", None)
    return memo


def memoize_index_reads(cls: Any = None) -> bool:
    """Patch SecantusDB's storage class (the whole process), or ``cls``, a subclass of it; False, and
    nothing changed, when this SecantusDB lacks one of the steps it relies on, e.g. after an upgrade that
    reworked them."""
    from secantus import storage

    cls = cls or storage.Storage
    if cls.__dict__.get("_pai_index_memo", False):
        return True
    retry = getattr(storage, "_retry_write_conflicts", None)
    steps = (*WRITES, READ, "_iter_indexes", "_maybe_mark_multikey")
    missing = [name for name in steps if not callable(getattr(cls, name, None))]
    # The statements themselves, inside SecantusDB's retry wrapper.
    raw: dict[str, Callable[..., Any]] = {}
    for name in WRITES:
        inner = getattr(getattr(cls, name, None), "__wrapped__", None)
        if callable(inner):
            raw[name] = inner
    if missing or retry is None or len(raw) != len(WRITES):
        log.warning("SecantusDB's storage changed shape: index definitions are read as before")
        return False

    walk = cls._iter_indexes
    mark = cls._maybe_mark_multikey

    def iter_indexes(self: Any, db: str, coll: str) -> Iterator[IndexRow]:
        memo = _memo()
        if memo is None:
            return iter(walk(self, db, coll))
        key = (id(self), db, coll)
        rows = memo.get(key)
        if rows is None:
            rows = memo[key] = list(walk(self, db, coll))
        return iter(rows)

    def maybe_mark_multikey(
        self: Any, db: str, coll: str, doc: Any, indexes: Any, already_multikey: set[str]
    ) -> set[str]:
        flagged = len(already_multikey)
        try:
            marked: set[str] = mark(self, db, coll, doc, indexes, already_multikey)
            return marked
        finally:
            memo = _memo()
            # The set grows when an index is (or is found) flagged: the table may have changed.
            if memo is not None and len(already_multikey) != flagged:
                memo.pop((id(self), db, coll), None)

    patched: dict[str, Callable[..., Any]] = {
        "_iter_indexes": iter_indexes,
        "_maybe_mark_multikey": maybe_mark_multikey,
        # Inside the retry wrapper, so each attempt starts with an empty memo.
        **{name: retry(_scoped(fn)) for name, fn in raw.items()},
        READ: _scoped(cls.find_matching),
    }
    for name, fn in patched.items():
        setattr(cls, name, fn)
    cls._pai_index_memo = True
    return True


def _scoped(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def statement(*args: Any, **kwargs: Any) -> Any:
        if _memo() is not None:  # a statement within a statement shares the outer one's memo
            return fn(*args, **kwargs)
        _local.memo = {}
        try:
            return fn(*args, **kwargs)
        finally:
            _local.memo = None

    return statement
