"""The embedded MongoDB-wire server runs a ``bulkWrite``'s consecutive inserts into one collection as one
insert statement.

MongoDB 8.0's ``bulkWrite`` command writes to several collections in one request. SecantusDB runs each of
its operations as a command of its own: a request inserting five documents into one collection and
deleting from another runs six statements, each taking the collection's lock, opening a WiredTiger
transaction and reading the collection's index definitions again. Two ``insert_many`` requests did the
same five documents in two statements, so a consumer that folded its bookkeeping into one ``bulkWrite``
saved requests in the client and spent them again in the server (issue 17).

``group_bulk_write_inserts`` installs ``grouped`` over SecantusDB's ``bulkWrite`` handler. ``grouped``
runs every run of consecutive inserts into the same namespace as one ``insert`` statement (ordered as the
request is) and every other operation as SecantusDB would, one at a time, and answers what SecantusDB
answers: the same per-operation results, indexes, counts and errors, the same stop at the first error of
an ordered request. A statement refused before it wrote anything (a write concern, a validator, an
``_id`` SecantusDB does not store: an ordered insert statement refuses all of its documents for one such)
runs its operations one by one again, which gives SecantusDB's own per-operation answers. A request out
of the ordinary (a ``let``, ``bypassDocumentValidation``, an ``nsInfo`` entry with more than its
namespace, a non-boolean ``ordered``) goes to SecantusDB's handler whole, and so does an insert operation
with fields beyond its document, one at a time.

One difference stays: a statement that raises (a write conflict) leaves none of its run written, where
SecantusDB would have written the inserts before the one that raised. The request fails either way, and
in a transaction, where the consumers send it, the whole transaction is aborted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import bson

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

# What ``grouped`` uses of SecantusDB's commands module; an upgrade that drops one leaves the handler as is.
NEEDED = (
    "_HANDLERS",
    "_bulk_write",
    "_insert",
    "_USER_FACING_EXCEPTIONS",
    "_unknown_command_field",
    "_bulk_write_op_error",
    "_bulk_write_first_batch_len",
    "_bulk_write_batch_size",
    "_BULK_WRITE_KNOWN_FIELDS",
    "_BULK_WRITE_MAX_OPS",
    "_BULK_WRITE_NS",
)

_COUNTS = ("nInserted", "nMatched", "nModified", "nUpserted", "nDeleted")


def _insert_runs(doc: Mapping[str, Any], ctx: Any, commands: Any) -> list[tuple[int, int, str]] | None:
    """The runs of two or more consecutive plain inserts into one namespace, as (first op, end, ns); None
    when the request is one for SecantusDB's handler whole (out of the ordinary, or nothing to group)."""
    if ctx.db_name != "admin" or commands._unknown_command_field(
        doc, "bulkWrite", commands._BULK_WRITE_KNOWN_FIELDS
    ):
        return None
    if doc.get("let") is not None or doc.get("bypassDocumentValidation") is not None:
        return None
    if not isinstance(doc.get("ordered", True), bool):
        return None
    ns_info, ops = doc.get("nsInfo"), doc.get("ops")
    if (
        not isinstance(ns_info, list)
        or not isinstance(ops, list)
        or not 0 < len(ops) <= commands._BULK_WRITE_MAX_OPS
    ):
        return None
    names: list[str] = []
    for entry in ns_info:
        if type(entry) is not dict or entry.keys() != {"ns"} or not isinstance(entry["ns"], str):
            return None
        _, dot, coll = entry["ns"].partition(".")
        if not dot or not coll:
            return None
        names.append(entry["ns"])
    runs: list[tuple[int, int, str]] = []
    start, current = 0, None  # the open run and its namespace; None: no insert open
    for i, op in enumerate([*ops, None]):
        ns = _plain_insert_ns(op, names)
        if ns is not None and ns == current:
            continue
        if current is not None and i - start > 1:
            runs.append((start, i, current))
        start, current = i, ns
    return runs or None


def _plain_insert_ns(op: Any, names: list[str]) -> str | None:
    """The namespace of an insert operation with nothing but its index and a document; else None."""
    if type(op) is not dict or op.keys() != {"insert", "document"}:
        return None
    index, document = op["insert"], op["document"]
    if type(index) is not int or not 0 <= index < len(names) or type(document) is not dict:
        return None
    return names[index]


def make_grouped(commands: Any) -> Handler:
    """``bulkWrite`` over SecantusDB's ``commands`` module, grouping insert runs (module docstring)."""
    plain: Handler = commands._bulk_write
    insert: Handler = commands._insert

    def grouped(doc: dict[str, Any], ctx: Any) -> dict[str, Any]:
        runs = _insert_runs(doc, ctx, commands)
        if runs is None:
            return plain(doc, ctx)
        ops: list[Any] = doc["ops"]
        ordered: bool = doc.get("ordered", True)
        errors_only = bool(doc.get("errorsOnly", False))
        results: list[dict[str, Any]] = []
        counts = dict.fromkeys(_COUNTS, 0)
        n_errors = 0

        def one_by_one(first: int, end: int) -> dict[str, Any] | bool:
            """SecantusDB's handler on ops[first:end]; its reply when it fails as a whole, else whether
            an ordered request stops here."""
            nonlocal n_errors
            part = {"bulkWrite": 1, "ops": ops[first:end], "nsInfo": doc["nsInfo"], "ordered": ordered}
            reply = plain(part, ctx)
            if not reply.get("ok"):
                return reply
            for key in _COUNTS:
                counts[key] += int(reply.get(key, 0))
            n_errors += int(reply.get("nErrors", 0))
            for entry in reply["cursor"]["firstBatch"]:
                entry["idx"] = first + int(entry["idx"])
                if not (errors_only and entry.get("ok")):
                    results.append(entry)
            return ordered and bool(reply.get("nErrors"))

        def as_one(first: int, end: int, ns: str) -> dict[str, Any] | bool | None:
            """ops[first:end], inserts into ``ns``, as one statement; None when it failed as a whole."""
            nonlocal n_errors
            db_name, _, coll = ns.partition(".")
            documents = [op["document"] for op in ops[first:end]]
            try:
                reply = insert(
                    {"insert": coll, "documents": documents, "ordered": ordered},
                    replace(ctx, db_name=db_name),
                )
            except commands._USER_FACING_EXCEPTIONS:
                return None
            if not reply.get("ok"):
                return None
            failed = {int(e["index"]): e for e in reply.get("writeErrors") or []}
            if ordered and failed and int(reply.get("n", 0)) != min(failed):
                # Refused before writing anything (a validator, an ``_id`` SecantusDB does not store), where
                # one by one the inserts before the refused one are written.
                return None
            last = min(failed) if failed and ordered else end - first - 1
            for offset in range(last + 1):
                idx = first + offset
                if offset in failed:
                    e = failed[offset]
                    results.append(
                        commands._bulk_write_op_error(idx, int(e.get("code", 8)), str(e.get("errmsg", "")), e)
                    )
                    n_errors += 1
                else:
                    counts["nInserted"] += 1
                    if not errors_only:
                        results.append({"ok": 1.0, "idx": idx, "n": 1})
            return ordered and bool(failed)

        at = 0
        for first, end, ns in [*runs, (len(ops), len(ops), "")]:
            stop: dict[str, Any] | bool | None = False
            if at < first:
                stop = one_by_one(at, first)
            if stop is False and first < end:
                stop = as_one(first, end, ns)
                if stop is None:
                    stop = one_by_one(first, end)
            if isinstance(stop, dict):
                return stop
            if stop:
                break
            at = end

        take = commands._bulk_write_first_batch_len(results, commands._bulk_write_batch_size(doc))
        cursor_id = bson.Int64(0)
        first_batch = results
        if take < len(results):
            first_batch = results[:take]
            cursor_id = bson.Int64(
                ctx.cursors.register(commands._BULK_WRITE_NS, results[take:], bounded=True)
            )
        return {
            "cursor": {"id": cursor_id, "firstBatch": first_batch, "ns": commands._BULK_WRITE_NS},
            "nErrors": n_errors,
            **counts,
            "ok": 1.0,
        }

    grouped.__wrapped__ = plain  # type: ignore[attr-defined]
    return grouped


def group_bulk_write_inserts() -> bool:
    """Install ``grouped`` as SecantusDB's ``bulkWrite`` handler (the whole process); False, and nothing
    changed, when the commands module lacks a part it uses, e.g. after an upgrade."""
    from secantus import commands

    if any(not hasattr(commands, name) for name in NEEDED):
        log.warning("SecantusDB's bulkWrite command changed shape: its inserts are left one statement each")
        return False
    current = commands._HANDLERS.get("bulkWrite")
    if getattr(current, "__wrapped__", None) is commands._bulk_write:
        return True  # installed already
    if current is not commands._bulk_write:
        log.warning("SecantusDB's bulkWrite handler is not its own: its inserts are left one statement each")
        return False
    commands._HANDLERS["bulkWrite"] = make_grouped(commands)
    return True
