"""The embedded server's ``bulkWrite`` runs consecutive inserts into one collection as one statement, and
answers exactly what SecantusDB's own handler answers.

The same random requests go to SecantusDB's handler over one storage and to the grouped handler over
another: inserts, updates and deletes over four collections, duplicates of ``_id`` and of a unique key, a
validator, ``_id``s SecantusDB refuses, malformed operations and namespaces, ordered or not, only errors
or all results, small cursor batches. The replies, the cursors' remaining results and every collection's
documents must be the same after each request.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from secantus import commands
from secantus.commands import CommandContext
from secantus.cursors import CursorRegistry
from secantus.storage import Storage

from pai_common.mongo_bulk_inserts import group_bulk_write_inserts, make_grouped

DB = "t"
COLLS = ("a", "b", "v", "w")
NS_INFO = [{"ns": f"{DB}.{c}"} for c in COLLS]
PLAIN = commands._bulk_write
GROUPED = make_grouped(commands)


class Counting(Storage):  # type: ignore[misc]
    """SecantusDB's storage, counting insert statements."""

    statements: int = 0

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return super().insert(*args, **kwargs)


def context(path: Path) -> CommandContext:
    storage = Counting(str(path), enable_oplog=False)
    ctx = CommandContext(connection_id=1, storage=storage, cursors=CursorRegistry())
    in_db = replace(ctx, db_name=DB)
    for coll in ("a", "b", "w"):
        assert commands._HANDLERS["create"]({"create": coll}, in_db)["ok"]
    assert commands._HANDLERS["create"]({"create": "v", "validator": {"x": {"$type": "int"}}}, in_db)["ok"]
    reply = commands._HANDLERS["createIndexes"](
        {"createIndexes": "a", "indexes": [{"key": {"k": 1}, "name": "k_1", "unique": True, "sparse": True}]},
        in_db,
    )
    assert reply["ok"], reply
    return ctx


@pytest.fixture
def pair(tmp_path: Path) -> tuple[CommandContext, CommandContext]:
    return context(tmp_path / "plain"), context(tmp_path / "grouped")


def contents(ctx: CommandContext) -> dict[str, list[dict[str, Any]]]:
    in_db = replace(ctx, db_name=DB)
    out = {}
    for coll in COLLS:
        reply = commands._find({"find": coll, "filter": {}, "batchSize": 10_000}, in_db)
        out[coll] = sorted(reply["cursor"]["firstBatch"], key=repr)
    return out


def answer(handler: Any, request: dict[str, Any], ctx: CommandContext) -> dict[str, Any]:
    """The reply, with a cursor's id replaced by the results it still holds."""
    reply = handler(request, ctx)
    cursor = reply.get("cursor")
    if cursor and cursor["id"]:
        more = commands._HANDLERS["getMore"]({"getMore": cursor["id"], "collection": "$cmd.bulkWrite"}, ctx)
        assert more["ok"], more
        cursor["id"] = ("more", more["cursor"]["nextBatch"])
    return reply


def random_op(rng: random.Random) -> dict[str, Any]:
    ns = rng.randrange(len(COLLS))
    roll = rng.random()
    if roll < 0.7:
        doc: dict[str, Any] = {"_id": rng.randrange(12), "x": rng.choice([1, 2, "s"])}
        if rng.random() < 0.5:
            doc["k"] = rng.randrange(6)
        if rng.random() < 0.03:
            doc["_id"] = {"$bad": 1}
        op: dict[str, Any] = {"insert": ns, "document": doc}
        odd = rng.random()
        if odd < 0.02:
            op["extra"] = 1
        elif odd < 0.03:
            del op["document"]
        elif odd < 0.04:
            op["insert"] = len(COLLS)
        return op
    if roll < 0.85:
        return {
            "update": ns,
            "filter": {"_id": rng.randrange(12)},
            "updateMods": {"$set": {"k": rng.randrange(6)}},
            "upsert": rng.random() < 0.3,
        }
    return {"delete": ns, "filter": {"x": rng.choice([1, 2, "s"])}, "multi": rng.random() < 0.5}


def random_request(rng: random.Random) -> dict[str, Any]:
    ops = [random_op(rng) for _ in range(rng.randint(1, 9))]
    if rng.random() < 0.5:  # a consumer's bookkeeping: runs into one collection, then a deletion
        ns = rng.randrange(len(COLLS))
        ops = [{"insert": ns, "document": {"_id": rng.randrange(12)}} for _ in range(rng.randint(2, 5))] + ops
    request: dict[str, Any] = {"bulkWrite": 1, "ops": ops, "nsInfo": NS_INFO}
    if rng.random() < 0.5:
        request["ordered"] = rng.random() < 0.5
    if rng.random() < 0.2:
        request["errorsOnly"] = True
    if rng.random() < 0.2:
        request["cursor"] = {"batchSize": rng.randrange(4)}
    if rng.random() < 0.03:
        request["let"] = {"v": 1}
    if rng.random() < 0.02:
        request["ordered"] = 1
    if rng.random() < 0.03:
        request["nsInfo"] = [*NS_INFO[:-1], rng.choice([{"ns": "nodot"}, {"ns": "t."}, {"ns": 5}])]
    return request


@pytest.mark.parametrize("seed", range(4))
def test_grouped_bulk_writes_answer_and_store_what_secantusdb_does(
    pair: tuple[CommandContext, CommandContext], seed: int
) -> None:
    plain, grouped = pair
    rng = random.Random(seed)
    for step in range(150):
        request = random_request(rng)
        expected = answer(PLAIN, _copy(request), plain)
        got = answer(GROUPED, _copy(request), grouped)
        assert got == expected, (step, request)
        assert contents(grouped) == contents(plain), (step, request)
        if rng.random() < 0.1:  # start over now and then, so that inserts keep meeting free ids
            for ctx in pair:
                commands._delete(
                    {"delete": "a", "deletes": [{"q": {}, "limit": 0}]}, replace(ctx, db_name=DB)
                )
    assert grouped.storage.statements < plain.storage.statements


def _copy(request: dict[str, Any]) -> dict[str, Any]:
    """A copy per handler: SecantusDB gives a document without ``_id`` one in place."""
    import copy

    return copy.deepcopy(request)


def test_a_consumers_bookkeeping_is_two_insert_statements(
    pair: tuple[CommandContext, CommandContext],
) -> None:
    plain, grouped = pair
    request = {
        "bulkWrite": 1,
        "ops": [
            *({"insert": 0, "document": {"_id": f"marker-{i}"}} for i in range(3)),
            *({"insert": 1, "document": {"_id": f"message-{i}"}} for i in range(4)),
            {"delete": 1, "filter": {"_id": {"$in": ["message-0"]}}, "multi": True},
        ],
        "nsInfo": NS_INFO,
    }
    expected = PLAIN(_copy(request), plain)
    got = GROUPED(_copy(request), grouped)
    assert got == expected
    assert got["nInserted"] == 7 and got["nDeleted"] == 1
    assert (plain.storage.statements, grouped.storage.statements) == (7, 2)


def test_an_ordered_run_stops_at_its_first_duplicate(pair: tuple[CommandContext, CommandContext]) -> None:
    plain, grouped = pair
    request = {
        "bulkWrite": 1,
        "ops": [{"insert": 1, "document": {"_id": i}} for i in (1, 2, 2, 3)],
        "nsInfo": NS_INFO,
    }
    expected = PLAIN(_copy(request), plain)
    got = GROUPED(_copy(request), grouped)
    assert got == expected
    assert [entry["ok"] for entry in got["cursor"]["firstBatch"]] == [1.0, 1.0, 0.0]
    assert got["cursor"]["firstBatch"][2]["code"] == 11000
    assert contents(grouped)["b"] == [{"_id": 1}, {"_id": 2}]


def test_installing_twice_changes_nothing_and_keeps_secantusdbs_handler_within() -> None:
    before = commands._HANDLERS["bulkWrite"]
    try:
        assert group_bulk_write_inserts()
        installed = commands._HANDLERS["bulkWrite"]
        assert installed is not PLAIN and installed.__wrapped__ is PLAIN
        assert group_bulk_write_inserts()
        assert commands._HANDLERS["bulkWrite"] is installed
    finally:
        commands._HANDLERS["bulkWrite"] = before
