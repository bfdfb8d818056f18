"""The embedded MongoDB-wire server walks a collection's index definitions once per statement.

`pai_common.mongo_index_memo` patches SecantusDB's storage class in the server process. Here it patches a
subclass that counts the walks, next to an unpatched one: a write walks once where SecantusDB alone walks
seven times, and what a statement or an index command changes is seen by what runs after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from secantus.storage import Storage

from pai_common.mongo_index_memo import memoize_index_reads

DB, COLL = "pai_jobs", "job_list"


class Counting(Storage):  # type: ignore[misc]
    """SecantusDB's storage, counting the walks of the index table."""

    walks: list[tuple[str, str]]

    def _iter_indexes(self, db: str, coll: str) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        self.walks.append((db, coll))
        rows: Iterator[tuple[str, dict[str, Any], dict[str, Any]]] = super()._iter_indexes(db, coll)
        return rows


class Memoized(Counting):
    pass


PATCHED = memoize_index_reads(Memoized)


def test_the_installed_secantusdb_has_every_step_the_memo_wraps() -> None:
    """An upgrade that reworks them must show here, not as a server that silently walks as before."""
    assert PATCHED


def open_storage(cls: type[Counting], path: Path) -> Counting:
    storage = cls(str(path), enable_oplog=False)
    storage.walks = []
    for name, field in (("by_user", "user"), ("by_state", "state"), ("by_tags", "tags")):
        storage.create_index(DB, COLL, name, {field: 1})
    storage.insert(DB, COLL, [{"_id": f"job-{i}", "user": "alice", "state": "WAITING"} for i in range(3)])
    return storage


def ids(storage: Counting, query: dict[str, Any], hint: str | None = None) -> list[str]:
    return sorted(d["_id"] for d in storage.find_matching(DB, COLL, query, hint=hint))


@pytest.fixture(params=[Counting, Memoized], ids=["secantus", "memoized"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Counting]:
    storage = open_storage(request.param, tmp_path / "db")
    try:
        yield storage
    finally:
        storage.close()


def test_a_one_document_update_walks_the_index_definitions_once(tmp_path: Path) -> None:
    plain, memoized = open_storage(Counting, tmp_path / "a"), open_storage(Memoized, tmp_path / "b")
    try:
        for storage in (plain, memoized):
            storage.walks.clear()
            result = storage.update_matching(DB, COLL, {"_id": "job-1"}, {"$set": {"state": "RUNNING"}})
            assert result["modified"] == 1
        assert len(plain.walks) >= 5  # what the memo saves: 7 with SecantusDB 0.7
        assert memoized.walks == [(DB, COLL)]
        for storage in (plain, memoized):
            storage.walks.clear()
            storage.insert(DB, COLL, [{"_id": f"job-{i}", "user": "bob", "state": "WAITING"} for i in (8, 9)])
        assert len(plain.walks) >= 6
        assert memoized.walks == [(DB, COLL)]
    finally:
        plain.close()
        memoized.close()


def test_updated_documents_are_found_through_every_index(storage: Counting) -> None:
    storage.update_matching(DB, COLL, {"_id": "job-1"}, {"$set": {"state": "RUNNING", "user": "bob"}})
    assert ids(storage, {"state": "RUNNING"}, "by_state") == ["job-1"]
    assert ids(storage, {"user": "bob"}, "by_user") == ["job-1"]
    assert ids(storage, {"state": "WAITING", "_id": "job-1"}, "by_state") == []
    storage.delete_matching(DB, COLL, {"_id": "job-2"}, limit=1)
    assert ids(storage, {"user": "alice"}, "by_user") == ["job-0"]


def test_a_statement_sees_the_multikey_flag_it_sets(storage: Counting) -> None:
    """An array in an indexed field flags the index multikey mid-statement: the next document of the same
    insert, and later queries, must not use the index as if it held one key per document."""
    storage.insert(
        DB,
        COLL,
        [
            {"_id": "tagged-1", "tags": ["gpu", "sweep"]},
            {"_id": "tagged-2", "tags": ["sweep", "cpu"]},
        ],
    )
    flagged = {i["name"]: i.get("multikey") for i in storage.list_indexes(DB, COLL)}
    assert flagged["by_tags"] is True
    assert ids(storage, {"tags": "sweep"}) == ["tagged-1", "tagged-2"]
    storage.update_matching(DB, COLL, {"_id": "tagged-1"}, {"$set": {"tags": ["cpu"]}})
    assert ids(storage, {"tags": "sweep"}) == ["tagged-2"]
    assert ids(storage, {"tags": "cpu"}) == ["tagged-1", "tagged-2"]


def test_an_index_made_between_statements_is_written_by_the_next(storage: Counting) -> None:
    storage.insert(DB, COLL, [{"_id": "job-5", "user": "carol", "queue": "default"}])
    storage.create_index(DB, COLL, "by_queue", {"queue": 1})
    storage.update_matching(DB, COLL, {"_id": "job-1"}, {"$set": {"queue": "default"}})
    storage.insert(DB, COLL, [{"_id": "job-6", "queue": "default"}])
    assert ids(storage, {"queue": "default"}, "by_queue") == ["job-1", "job-5", "job-6"]
    assert storage.drop_index(DB, COLL, "by_queue")
    storage.update_matching(DB, COLL, {"_id": "job-6"}, {"$set": {"queue": "other"}})
    assert ids(storage, {"queue": "other"}) == ["job-6"]
