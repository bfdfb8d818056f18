"""The embedded MongoDB-wire server: SecantusDB run through its Python API.

Run as ``python -m pai_common.mongo_server``. The one difference from its own ``secantusd-py`` daemon
is the transaction lifetime. A service killed in the middle of a transaction leaves it open, and its
documents stay locked until the server reaps it; every handler here commits within a second, so an
idle transaction is reaped after 10 s instead of mongod's 60 s, and a restarted service gets back to
work that much sooner.

Commits are also synced to the journal before they are acknowledged (SecantusDB's ``sync_on_commit``).
Without it a commit could be acknowledged while its journal record was still in the server's memory: a
SIGKILL of the whole platform then lost the last commits although the events they caused were already
published (a job's first orchestrator transition gone, its event out). On this machine the sync cost no
measurable time per small transaction (3.2 ms with, 3.9 ms without, 300 transactions each).

Idle transactions are looked for at most every ``REAP_INTERVAL_S`` (``throttle_reaping``). SecantusDB looks
at every statement and every commit, through the last transaction of every session it ever saw, under the
lock all statements take: about 1.4 µs per session, 140 µs with the hundred-odd sessions of a running
platform, and 15-25% of the shared server's CPU under a burst of jobs (issue 17; py-spy). A transaction
idle past its lifetime is then reaped up to that interval later, which no client can tell from a slower
reaper. A thread also looks every second (``reap_while_idle``): a transaction left open by a killed client
must be reaped even when no statement comes, for the platform may be waiting on its very writes.

It writes no oplog (``without_oplog``). SecantusDB keeps one as a replica set does, for change streams, at
a BSON encode and a table write per document written; no service reads a change stream (they learn of
changes over NATS), and the oplog cost 16% of the servers' CPU under a burst of jobs (issue 17). The
server still answers as a replica set, which transactions need. And it reads each collection's index
definitions once per statement (``pai_common.mongo_index_memo``), an update rewrites only the index entries
it changes (``pai_common.mongo_index_diff``), documents are copied with a copier made for them
(``pai_common.mongo_document_copy``), WiredTiger's keys and values are packed with a plan per format
(``pai_common.wiredtiger_packing``), a ``bulkWrite``'s consecutive inserts into one collection are one
statement (``pai_common.mongo_bulk_inserts``), and an ``$in`` over plain strings is answered from a set
(``pai_common.mongo_in_sets``).

One change is a fix, not a saving: a deleteMany or updateMany outside a transaction waits out a write
conflict without holding its collection's lock (``pai_common.mongo_conflict_waits``); holding it, it could
deadlock with the transaction it waited for, and stall the whole server.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

from pai_common import deferred_geo
from pai_common.mongo_bulk_inserts import group_bulk_write_inserts
from pai_common.mongo_conflict_waits import wait_conflicts_unlocked
from pai_common.mongo_document_copy import copy_documents_faster
from pai_common.mongo_in_sets import match_in_by_set
from pai_common.mongo_index_diff import rewrite_changed_index_entries
from pai_common.mongo_index_memo import memoize_index_reads
from pai_common.wiredtiger_packing import plan_wiredtiger_packing

if TYPE_CHECKING:  # importing secantus imports the whole server: main() does, after deferred_geo.defer()
    from secantus import SecantusDBServer
    from secantus.transactions import TransactionRegistry

log = logging.getLogger(__name__)

REAP_INTERVAL_S = 0.25
# How often idle transactions are looked for when no statement comes (reap_while_idle).
IDLE_REAP_EVERY_S = 1.0


def throttle_reaping(
    registry: TransactionRegistry, interval_s: float, clock: Callable[[], float] = time.monotonic
) -> bool:
    """Let ``registry`` look for idle transactions at most once per ``interval_s``; False (and nothing
    changed) when this SecantusDB has no such step, e.g. after an upgrade that reworked it."""
    prune = getattr(registry, "_prune_locked", None)
    if not callable(prune):
        log.warning("SecantusDB's transaction registry has no _prune_locked: reaping left as it is")
        return False
    last = -float("inf")

    def throttled() -> int:
        # Called with the registry's lock held, as the step it replaces: ``last`` needs no lock of its own.
        nonlocal last
        now = clock()
        if now - last < interval_s:
            return 0
        last = now
        reaped: int = prune()
        return reaped

    registry._prune_locked = throttled  # type: ignore[method-assign]
    return True


def reap_while_idle(registry: TransactionRegistry, every_s: float) -> threading.Thread:
    """Look for idle transactions every ``every_s`` from a thread of its own, not only when a statement comes.

    SecantusDB reaps at statements and commits only. A transaction whose client was killed holds its
    writes until it is reaped, and a platform waiting on that very write sends no statement: on the e2e
    test that kills the scheduler, its restart's outbox clean-up (a deleteMany) met the dead scheduler's
    open transaction, nothing else ran, and the scheduler was not ready after 60 s (seen in a full run,
    2026-12-07). The thread takes the registry's lock as a statement's reaping does.
    """

    def loop() -> None:
        while True:
            time.sleep(every_s)
            try:
                registry.prune_expired()
            except Exception as exc:  # the next round tries again; a reaper must not die of one failure
                log.warning("idle transactions not reaped this round: %r", exc)

    thread = threading.Thread(target=loop, name="pai-idle-reaper", daemon=True)
    thread.start()
    return thread


def without_oplog(server: SecantusDBServer) -> None:
    """Stop ``server`` writing its oplog; it still answers as a replica set, which transactions need."""
    # Its storage layer supports turning this off after start. Its refusal of a transaction too large for
    # the cache counts oplog entries, so it refuses none now: the largest the platform writes (a job of
    # 1,000 tasks, its snapshot included) is a few MiB, far below the 1 GiB cache's 150 MiB limit.
    server.storage.enable_oplog = False


def stop_server(server: SecantusDBServer) -> None:
    """Stop ``server`` without waiting out its accept thread.

    SecantusDB's stop closes its listening socket, then joins the thread blocked in ``accept()`` on it for
    up to 2 s. On Linux a close does not wake that thread, so every stop took those 2 s and left the
    thread behind (``pai up`` waited for its database servers last, after its services, at each Ctrl-C;
    every test platform at each stop). A shutdown of the socket does wake it: ``accept()`` fails, and the
    thread ends at once."""
    listening = getattr(server, "_socket", None)
    if listening is not None:
        with contextlib.suppress(OSError):  # already closed: nothing is waiting on it
            listening.shutdown(socket.SHUT_RDWR)
    server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pai_common.mongo_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--storage-path", required=True)
    parser.add_argument("--transaction-lifetime-s", type=float, default=10.0)
    parser.add_argument("--log-level", default="WARNING")
    # Access control (SCRAM-SHA-256) and TLS, as the Compose deployment's mongo runs (tests/deploy): users
    # are created while it runs without --auth, which SecantusDB then requires from every client.
    parser.add_argument("--auth", action="store_true")
    parser.add_argument("--tls-pem-file", help="the server's certificate followed by its key; TLS only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Shapely and numpy only for a geo query, which the platform never runs (deferred_geo.py).
    deferred_geo.defer()
    from secantus import SecantusDBServer

    wait_conflicts_unlocked()  # first: the patches below wrap the same methods in its retry
    memoize_index_reads()
    rewrite_changed_index_entries()
    copy_documents_faster()
    plan_wiredtiger_packing()
    group_bulk_write_inserts()
    match_in_by_set()
    server = SecantusDBServer(
        host=args.host,
        port=args.port,
        storage_path=args.storage_path,
        # As the daemon does: test-only commands (fail points) stay off on a served port.
        enable_test_commands=False,
        transaction_lifetime_seconds=args.transaction_lifetime_s,
        sync_on_commit=True,
        require_auth=args.auth,
        tls_cert_file=args.tls_pem_file,
        tls_key_file=args.tls_pem_file,
    )
    without_oplog(server)
    throttle_reaping(server.transactions, REAP_INTERVAL_S)
    reap_while_idle(server.transactions, IDLE_REAP_EVERY_S)

    def stop(signum: int, frame: FrameType | None) -> None:
        stop_server(server)  # closes the storage cleanly
        # Connection threads of clients that are still connected would hold a normal exit open.
        os._exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    server.start()
    server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
