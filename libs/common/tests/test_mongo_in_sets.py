"""The embedded MongoDB-wire server's ``$in`` over plain strings answers from a set, exactly as SecantusDB
answered it: the same result for every kind of value and list (the fast case and every case it leaves to
SecantusDB), the same documents found and deleted through the storage, and one set built per list."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import secantus.query
from bson import Code, Decimal128, Int64, ObjectId, Regex
from secantus.collation import Collation
from secantus.storage import Storage

from pai_common.mongo_in_sets import MARK, match_in_by_set

ORIGINAL = secantus.query._op_matches


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(secantus.query, "_op_matches", ORIGINAL)  # restored after the test
    assert match_in_by_set()
    assert secantus.query._op_matches is not ORIGINAL
    yield


SCALARS: list[Any] = [
    "a",
    "b",
    "job-1",
    "",
    "A",
    Code("a"),  # a str subclass: not a plain string, SecantusDB decides
    1,
    1.0,
    True,
    None,
    Int64(1),
    Decimal128("1"),
    ObjectId("0" * 24),
    float("nan"),
]
VALUES: list[Any] = [*SCALARS, ["a", "b"], [1, "a"], {"a": 1}, secantus.query.MISSING]


def test_every_kind_of_value_and_list_matches_as_secantusdb_matched(patched: None) -> None:
    fast = secantus.query._op_matches
    rng = random.Random(17)
    lists: list[list[Any]] = [["a"], ["a", "b", "job-1"], ["x", "y"], ["a", 1], [None, "a"], [Regex("^a")]]
    lists += [rng.sample(SCALARS, rng.randint(1, 6)) for _ in range(40)]
    checked = 0
    for arg in lists:
        for values in itertools.chain(([v] for v in VALUES), ([a, b] for a, b in itertools.pairwise(VALUES))):
            for op in ("$in", "$nin"):
                expected = ORIGINAL(values, op, arg)
                assert fast(values, op, arg) is expected, (values, op, arg)
                checked += 1
    assert checked > 2000


def test_a_collation_or_an_empty_list_goes_to_secantusdb(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def counting(*args: Any, **kwargs: Any) -> bool:
        calls.append(args)
        return bool(ORIGINAL(*args, **kwargs))

    monkeypatch.setattr(secantus.query, "_op_matches", counting)
    assert match_in_by_set()
    fast = secantus.query._op_matches
    assert fast(["a"], "$in", ["a", "b"]) is True  # answered by the set
    assert fast(["c"], "$in", ["a", "b"]) is False
    assert calls == []
    assert fast(["a"], "$in", []) is False
    # Case-insensitive: equal under the collation, which only SecantusDB applies.
    assert fast(["ping"], "$in", ["PING"], Collation(strength=2)) is True
    assert len(calls) == 2


def test_installed_once_and_marked(patched: None) -> None:
    installed = secantus.query._op_matches
    assert getattr(installed, MARK)
    assert match_in_by_set() and secantus.query._op_matches is installed


DB, COLL = "pai_orchestrator", "outbox"


@pytest.mark.parametrize("kind", ["patched", "as shipped"])
def test_the_storage_finds_and_deletes_the_same_documents(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secantus.query, "_op_matches", ORIGINAL)
    if kind == "patched":
        assert match_in_by_set()
    storage = Storage(str(tmp_path / "db"), enable_oplog=False)
    docs: list[dict[str, Any]] = [{"_id": f"m{i:04d}", "n": i} for i in range(300)]
    docs += [{"_id": 7, "n": -1}, {"_id": ObjectId("1" * 24), "n": -2}, {"_id": "tags", "t": ["m0001", "x"]}]
    storage.insert(DB, COLL, docs)
    wanted = [f"m{i:04d}" for i in range(0, 300, 3)] + ["absent", "m9999"]
    found = sorted(d["_id"] for d in storage.find_matching(DB, COLL, {"_id": {"$in": wanted}}))
    assert found == sorted(f"m{i:04d}" for i in range(0, 300, 3))
    # An array field matches by any element; a number is not its string.
    tagged = [d["_id"] for d in storage.find_matching(DB, COLL, {"t": {"$in": ["m0001"]}})]
    assert tagged == ["tags"]
    assert [d["_id"] for d in storage.find_matching(DB, COLL, {"_id": {"$in": ["7", 7.0]}})] == [7]
    deleted = storage.delete_matching(DB, COLL, {"_id": {"$in": wanted}})
    assert deleted == 100
    left = sorted(str(d["_id"]) for d in storage.find_matching(DB, COLL, {}))
    assert len(left) == 203 and "m0000" not in left and "m0001" in left
