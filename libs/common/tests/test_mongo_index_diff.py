"""Updates in the embedded MongoDB-wire server rewrite only the index entries that change.

`pai_common.mongo_index_diff` patches SecantusDB's storage class in the server process. Here it patches a
subclass. The same random statements run against it and against SecantusDB as it is, over every kind of
index the server offers (compound, multikey, unique, sparse, partial, with a collation), and after each
statement the two hold the same index entries and unique-key claims, find the same documents through
each index, and refuse the same duplicates. A third storage counts what the patch saves.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from secantus.storage import _IDX_ENTRIES_TABLE, _UNIQ_TABLE, Storage

from pai_common.mongo_index_diff import rewrite_changed_index_entries, same_at
from pai_common.mongo_index_memo import memoize_index_reads

DB, COLL = "pai_jobs", "jobs"

INDEXES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("by_state", {"state": 1}, {}),
    ("by_user_state", {"user": 1, "state": 1, "seq": -1}, {}),
    ("by_tags", {"tags": 1}, {}),
    ("by_task_gpu", {"tasks.gpu": 1}, {}),
    ("by_code", {"code": 1}, {"unique": True, "sparse": True}),
    ("by_opt", {"opt": 1}, {"sparse": True}),
    ("running_by_seq", {"seq": 1}, {"partialFilterExpression": {"state": "RUNNING"}}),
    ("by_name_ci", {"name": 1}, {"collation": {"locale": "en", "strength": 2}}),
]


class Plain(Storage):  # type: ignore[misc]
    """SecantusDB's storage, counting index-entry removals and writes."""

    rewrites: int = 0

    def _delete_index_entries(self, *args: Any, **kwargs: Any) -> None:
        self.rewrites += len(args[3])
        super()._delete_index_entries(*args, **kwargs)


class Diffing(Plain):
    pass


class MemoDiffing(Plain):
    """Patched as the server's storage is: the index memo first, then this."""


PATCHED = rewrite_changed_index_entries(Diffing)
PATCHED_AS_SERVED = memoize_index_reads(MemoDiffing) and rewrite_changed_index_entries(MemoDiffing)


def test_the_installed_secantusdb_has_every_step_the_patch_wraps() -> None:
    """An upgrade that reworks them must show here, not as a server that silently rewrites as before."""
    assert PATCHED and PATCHED_AS_SERVED


def open_storage(cls: type[Plain], path: Path) -> Plain:
    storage = cls(str(path), enable_oplog=False)
    storage.rewrites = 0
    for name, keys, options in INDEXES:
        storage.create_index(DB, COLL, name, keys, options)
    return storage


def table(storage: Storage, name: str) -> list[tuple[Any, ...]]:
    cursor = storage._cursor(name)
    cursor.reset()
    rows = []
    while cursor.next() == 0:
        rows.append((*cursor.get_keys(), *cursor.get_values()))
    cursor.reset()
    return rows


def found(storage: Storage) -> list[list[Any]]:
    out = []
    for name, keys, options in INDEXES:
        field = next(iter(keys))
        query: dict[str, Any] = {field: {"$exists": True}}
        query.update(options.get("partialFilterExpression", {}))
        kwargs: dict[str, Any] = {"hint": name}
        if "collation" in options:
            kwargs["collation"] = options["collation"]
        out.append(sorted(str(d["_id"]) for d in storage.find_matching(DB, COLL, query, **kwargs)))
    return out


STATES = ["WAITING", "RUNNING", "SUCCEEDED", "FAILED"]


def a_document(rng: random.Random, i: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": f"job-{i}",
        "user": rng.choice(["alice", "bob"]),
        "state": rng.choice(STATES),
        "seq": i,
        "name": rng.choice(["Train", "train", "eval"]),
        "tags": rng.sample(["a", "b", "c"], rng.randint(0, 2)),
        "tasks": [{"gpu": rng.randint(0, 3)} for _ in range(rng.randint(0, 2))],
    }
    if rng.random() < 0.5:
        doc["opt"] = rng.randint(0, 2)
    if rng.random() < 0.5:
        doc["code"] = f"c{rng.randint(0, 9)}"
    return doc


def an_update(rng: random.Random) -> dict[str, Any]:
    choice = rng.randrange(9)
    if choice == 0:
        return {"$set": {"state": rng.choice(STATES)}}
    if choice == 1:
        return {"$set": {"snapshot": {"version": rng.randint(0, 9)}}, "$inc": {"retries": 1}}
    if choice == 2:
        return {"$push": {"tags": rng.choice(["a", "b", "d"])}}
    if choice == 3:
        if rng.random() < 0.3:
            return {"$unset": {"opt": ""}}
        # Values Python's == calls equal where index keys may not: types, signs, field order.
        values = [0, 0.0, -0.0, False, 1, 1.0, True, None, [1], [1.0], {"x": 1, "y": 2}, {"y": 2, "x": 1}]
        return {"$set": {"opt": rng.choice(values)}}
    if choice == 4:
        return {"$set": {"code": f"c{rng.randint(0, 9)}"}}
    if choice == 5:
        return {"$set": {"tasks.0.gpu": rng.choice([0, 1, 1.0, True, [1, 2]])}}
    if choice == 6:
        return {"$set": {"name": rng.choice(["TRAIN", "train", "Eval"])}}
    if choice == 7:
        return {"$set": {"user": rng.choice(["alice", "bob"]), "seq": rng.randint(0, 50)}}
    return {"$set": {"state": "RUNNING", "seq": rng.randint(0, 50)}}


def step(storage: Storage, op: tuple[str, Any, Any]) -> str:
    kind, filt, arg = op
    try:
        if kind == "insert":
            _count, errors = storage.insert(DB, COLL, [arg])
            if errors:
                return f"refused {errors[0]['code']}"
        elif kind == "update":
            storage.update_matching(DB, COLL, filt, arg)
        elif kind == "update_many":
            storage.update_matching(DB, COLL, filt, arg, multi=True)
        elif kind == "replace":
            storage.update_matching(DB, COLL, filt, arg)
        elif kind == "upsert":
            storage.update_matching(DB, COLL, filt, arg, upsert=True)
        else:
            storage.delete_matching(DB, COLL, filt)
    except Exception as exc:  # a duplicate code, for one: both must refuse it alike
        return type(exc).__name__
    return "ok"


def operations(seed: int, count: int) -> Iterator[tuple[str, Any, Any]]:
    rng = random.Random(seed)
    for i in range(count):
        roll = rng.random()
        target = {"_id": f"job-{rng.randrange(i + 1)}"}
        if roll < 0.25:
            yield "insert", None, a_document(rng, i)
        elif roll < 0.75:
            yield "update", target, an_update(rng)
        elif roll < 0.83:
            yield "update_many", {"user": rng.choice(["alice", "bob"])}, an_update(rng)
        elif roll < 0.9:
            replacement = a_document(rng, i)
            del replacement["_id"]
            yield "replace", target, replacement
        elif roll < 0.95:
            yield "upsert", {"_id": f"job-{i}-u"}, {"$set": {"state": rng.choice(STATES), "seq": i}}
        else:
            yield "delete", target, None


@pytest.mark.parametrize("patched", [Diffing, MemoDiffing], ids=["diff", "memo-and-diff"])
@pytest.mark.parametrize("seed", range(4))
def test_a_patched_storage_holds_the_same_entries_after_every_statement(
    seed: int, patched: type[Plain], tmp_path: Path
) -> None:
    plain = open_storage(Plain, tmp_path / "plain")
    diffing = open_storage(patched, tmp_path / "diffing")
    outcomes = []
    for op in operations(seed, 150):
        outcome = step(plain, op)
        assert step(diffing, op) == outcome, op
        outcomes.append(outcome)
        assert table(diffing, _IDX_ENTRIES_TABLE) == table(plain, _IDX_ENTRIES_TABLE), op
        assert table(diffing, _UNIQ_TABLE) == table(plain, _UNIQ_TABLE), op
    assert found(diffing) == found(plain)
    # The statements did reach every path: refusals as well as writes, and the patch saved work.
    assert outcomes.count("ok") > 100 and len(set(outcomes)) >= 2, set(outcomes)
    assert diffing.rewrites < plain.rewrites / 2


def test_an_update_rewrites_only_the_indexes_whose_entries_change(tmp_path: Path) -> None:
    storage = open_storage(Diffing, tmp_path / "db")
    storage.insert(DB, COLL, [{"_id": "job-1", "state": "RUNNING", "seq": 1, "code": "c1", "tags": ["a"]}])
    storage.rewrites = 0
    storage.update_matching(DB, COLL, {"_id": "job-1"}, {"$set": {"snapshot": {"version": 2}}})
    # Only the index with a collation, which is always rewritten.
    assert storage.rewrites == 1
    storage.rewrites = 0
    storage.update_matching(DB, COLL, {"_id": "job-1"}, {"$set": {"state": "SUCCEEDED"}})
    # by_state and by_user_state change, running_by_seq loses the entry, and the collated index.
    assert storage.rewrites == 4
    assert [d["_id"] for d in storage.find_matching(DB, COLL, {"state": "SUCCEEDED"}, hint="by_state")] == [
        "job-1"
    ]
    assert list(storage.find_matching(DB, COLL, {"seq": 1, "state": "RUNNING"}, hint="running_by_seq")) == []


def test_a_unique_key_kept_by_an_update_stays_claimed(tmp_path: Path) -> None:
    storage = open_storage(Diffing, tmp_path / "db")
    storage.insert(DB, COLL, [{"_id": "job-1", "code": "c1"}])
    storage.update_matching(DB, COLL, {"_id": "job-1"}, {"$set": {"state": "RUNNING"}})
    _count, errors = storage.insert(DB, COLL, [{"_id": "job-2", "code": "c1"}])
    assert [e["code"] for e in errors] == [11000]
    storage.update_matching(DB, COLL, {"_id": "job-1"}, {"$set": {"code": "c2"}})
    assert storage.insert(DB, COLL, [{"_id": "job-2", "code": "c1"}]) == (1, [])
    with pytest.raises(Exception, match="duplicate key"):
        storage.update_matching(DB, COLL, {"_id": "job-2"}, {"$set": {"code": "c2"}})


@pytest.mark.parametrize(
    ("old", "new", "path", "expected"),
    [
        ({"a": 1}, {"a": 1}, ["a"], True),
        ({"a": 1}, {"a": 1.0}, ["a"], False),
        ({"a": 1}, {"a": True}, ["a"], False),
        ({"a": 0.0}, {"a": -0.0}, ["a"], False),
        ({"a": float("nan")}, {"a": float("nan")}, ["a"], False),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": 2, "x": 1}}, ["a"], False),
        ({"a": {"x": 1, "y": 2}}, {"a": {"x": 1, "y": 3}}, ["a", "x"], True),
        ({"a": [{"x": 1}]}, {"a": [{"x": 1}, {"y": 2}]}, ["a", "x"], False),
        ({"a": 5}, {"a": 5}, ["a", "x"], True),
        ({"a": 5}, {"a": {"x": 5}}, ["a", "x"], False),
        ({}, {"a": None}, ["a"], False),
        ({"b": 1}, {"c": 1}, ["a"], True),
    ],
)
def test_values_are_the_same_only_as_index_keys_would_be(
    old: dict[str, Any], new: dict[str, Any], path: list[str], expected: bool
) -> None:
    assert same_at(old, new, path) is expected
