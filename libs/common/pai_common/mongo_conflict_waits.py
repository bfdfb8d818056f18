"""The embedded MongoDB-wire server's deleteMany and updateMany wait out a write conflict without holding
their collection's lock.

SecantusDB runs a deleteMany or updateMany outside a transaction in chunks, each chunk a storage
transaction of its own, all under the collection's lock. A chunk that meets a write conflict (a document
that another client's open transaction wrote) is rolled back, sleeps and tries again for as long as it
takes, and it held the lock while it slept. The open transaction's next statement on that collection
waits for that lock, so neither could go on; the server's transaction registry then waited on that
transaction too, and the whole server stopped answering, for good. Seen on ``pai up`` (2026-12-07): the
two runtime agents share ``pai_runtime.outbox``; one agent's clean-up of published messages (a
deleteMany) met the other's consumer transaction, and every service on the shared server stalled.

``wait_conflicts_unlocked`` retries such a chunk as SecantusDB does (the same delays, the same warning
every few seconds) but lets the collection's lock go while it sleeps, and takes it back before trying
again. That is safe because of how the chunked statements are built: the documents to write are a list
of record ids taken once, and each chunk reads each of its documents again inside its own storage
transaction and checks the filter again, because user transactions may commit between two chunks anyway.
Writes of other clients that come in while the lock is let go are seen the same way; each record id is
still written once (``$inc`` applies once per document). The retry replaces SecantusDB's for all five
writes it retries; the three whose every attempt takes the lock itself sleep without it as before.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# What SecantusDB retries on write conflicts; the two chunks are called with the collection's lock held.
RETRIED = (
    "_insert_chunk",
    "_update_chunk",
    "_update_matching_single_txn",
    "_delete_chunk",
    "_delete_matching_single_txn",
)


def wait_conflicts_unlocked(cls: Any = None) -> bool:
    """Patch SecantusDB (the whole process): its retry decorator, for the patches applied after this one
    (``mongo_index_memo`` wraps these methods in it again), and the methods it decorated on its storage
    class, or ``cls``, a subclass. Apply it before any other patch of those methods. False, and nothing
    changed, when this SecantusDB lacks a step it relies on or the methods were wrapped already."""
    from secantus import storage

    cls = cls or storage.Storage
    if cls.__dict__.get("_pai_conflict_waits", False):
        return True
    original = getattr(storage, "_retry_write_conflicts", None)
    needed = ("WriteConflictError", "_is_wt_rollback", "_WRITE_CONFLICT_RETRY_DELAY_S", "wt")
    if original is None or not all(hasattr(storage, n) for n in needed):
        log.warning("SecantusDB's storage changed shape: writes wait for conflicts as before")
        return False
    theirs = original(lambda *args: None).__code__  # the code of every wrapper it made
    methods: dict[str, Any] = {name: getattr(cls, name, None) for name in RETRIED}
    if not all(getattr(m, "__code__", None) is theirs for m in methods.values()):
        log.warning("SecantusDB's retried writes changed or were wrapped already: they wait as before")
        return False
    retry = _unlocked_retry(storage)
    storage._retry_write_conflicts = retry
    for name, method in methods.items():
        setattr(cls, name, retry(method.__wrapped__))
    cls._pai_conflict_waits = True
    return True


def _unlocked_retry(storage: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """SecantusDB's retry on write conflicts (its delays, its warning), letting the collection's lock go
    while it sleeps when the caller holds it."""
    conflict = storage.WriteConflictError
    first_delay = storage._WRITE_CONFLICT_RETRY_DELAY_S
    max_delay = getattr(storage, "_WRITE_CONFLICT_RETRY_DELAY_MAX_S", first_delay)
    log_every = getattr(storage, "_WRITE_CONFLICT_RETRY_LOG_EVERY_S", 5.0)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def retried(self: Any, db: str, coll: str, *args: Any, **kwargs: Any) -> Any:
            delay = first_delay
            started = last_log = None
            while True:
                try:
                    return fn(self, db, coll, *args, **kwargs)
                except (conflict, storage.wt.WiredTigerError) as exc:
                    if not isinstance(exc, conflict) and not storage._is_wt_rollback(exc):
                        raise
                    if getattr(self._tls, "user_txn", None) is not None:
                        raise  # inside a user transaction the statement fails, as SecantusDB has it
                    now = time.monotonic()
                    if started is None:
                        started = last_log = now
                    elif now - (last_log or now) >= log_every:
                        last_log = now
                        log.warning(
                            "%s retrying on write conflicts for %.1fs (%s)", fn.__name__, now - started, exc
                        )
                    lock = self._coll_lock(db, coll)
                    if not lock._is_owned():
                        time.sleep(delay)  # the statement takes the lock itself, each attempt
                    else:
                        held = lock._release_save()  # every level the caller holds
                        try:
                            time.sleep(delay)
                        finally:
                            lock._acquire_restore(held)
                    delay = min(delay * 2, max_delay)

        return retried

    return decorate
