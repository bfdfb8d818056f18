"""The embedded MongoDB-wire server copies stored documents with `copy_document`, not `copy.deepcopy`.

The copy must be as deep as `deepcopy`'s wherever SecantusDB may change it (every dict and list), equal to
it for every BSON type, and it must leave the statements' results as they were: an updated document's
old index entries still go, its new ones come, a projection still cuts only the copy.
"""

from __future__ import annotations

import copy
import datetime
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
import secantus.projection
import secantus.update
from bson import SON, Binary, Code, DBRef, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from secantus.storage import Storage

from pai_common.mongo_document_copy import MODULES, copy_document, copy_documents_faster

NOW = datetime.datetime(2026, 12, 7, 6, 30, 0, 123000)


def every_type() -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "name": "job-1",
        "n": 3,
        "big": Int64(2**40),
        "f": 0.5,
        "yes": True,
        "none": None,
        "at": NOW,
        "dec": Decimal128("1.25"),
        "ts": Timestamp(1, 2),
        "bin": Binary(b"\x00\x01", 0),
        "uuid": Binary.from_uuid(uuid.UUID(int=7)),
        "raw": b"bytes",
        "re": Regex("^a", "i"),
        "code": Code("f(x)", {"x": [1, 2]}),
        "ref": DBRef("jobs", "job-1", extra={"k": [1]}),
        "son": SON([("b", [1]), ("a", {"c": 2})]),
        "lo": MinKey(),
        "hi": MaxKey(),
        "snapshot": {"tasks": [{"index": 0, "ports": {"ssh": 22}, "gpus": [0, 1]}], "history": [[1, [2]]]},
        "tags": ["a", "b"],
    }


def test_a_copy_equals_deepcopys_for_every_bson_type() -> None:
    doc = every_type()
    assert copy_document(doc) == copy.deepcopy(doc)
    decoded = bson.decode(bson.encode(doc))
    assert copy_document(decoded) == decoded
    assert bson.encode(copy_document(decoded)) == bson.encode(decoded)


def mutable_parts(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from mutable_parts(item)
    elif isinstance(value, list):
        yield value
        for item in value:
            yield from mutable_parts(item)
    elif isinstance(value, (Code, DBRef, Regex)):
        yield value


def test_a_copy_shares_no_container_with_its_source() -> None:
    doc = every_type()
    original = copy.deepcopy(doc)
    copied = copy_document(doc)
    source_ids = {id(part) for part in mutable_parts(doc)}
    assert not source_ids & {id(part) for part in mutable_parts(copied)}
    # Change every container of the copy: the source stays as it was.
    copied["snapshot"]["tasks"][0]["ports"]["ssh"] = 2222
    copied["snapshot"]["history"][0][1].append(3)
    copied["son"]["b"].append(2)
    copied["code"].scope["x"].append(3)
    copied["tags"].clear()
    assert doc == original


def test_a_value_deepcopy_is_handed_a_memo_for_goes_to_deepcopy() -> None:
    shared = [1, 2]
    memo: dict[int, Any] = {}
    pair = copy_document({"a": shared, "b": shared}, memo)
    assert pair["a"] is pair["b"] and pair["a"] is not shared


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for module in (secantus.update, secantus.projection):
        monkeypatch.setattr(module, "copy", copy)  # restored after the test
    assert copy_documents_faster()
    yield


def test_the_installed_secantusdb_copies_through_the_patch(patched: None) -> None:
    """An upgrade that stops copying with the copy module must show here, not as a silent no-op."""
    assert MODULES == ("secantus.update", "secantus.projection")
    for module in (secantus.update, secantus.projection):
        assert module.copy is not copy and module.copy.deepcopy is copy_document
        assert module.copy.copy is copy.copy
    shim = secantus.update.copy
    assert copy_documents_faster() and secantus.update.copy is shim  # a second call changes nothing


def test_a_server_whose_modules_no_longer_use_copy_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(secantus.projection, "copy")
    monkeypatch.setattr(secantus.update, "copy", copy)
    assert not copy_documents_faster()
    assert secantus.update.copy is copy


DB, COLL = "pai_jobs", "jobs"


def test_updates_and_projections_give_what_they_gave(patched: None, tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "db"), enable_oplog=False)
    storage.create_index(DB, COLL, "by_state", {"state": 1})
    storage.create_index(DB, COLL, "by_gpu", {"snapshot.tasks.gpus": 1})
    storage.insert(DB, COLL, [{**every_type(), "_id": "job-1", "state": "WAITING"}])
    storage.update_matching(
        DB,
        COLL,
        {"_id": "job-1"},
        {"$set": {"state": "RUNNING", "snapshot.tasks.0.gpus": [3]}, "$push": {"tags": "c"}},
    )
    (stored,) = storage.find_matching(DB, COLL, {"_id": "job-1"})
    assert stored["state"] == "RUNNING" and stored["tags"] == ["a", "b", "c"]
    assert stored["snapshot"]["tasks"][0]["gpus"] == [3]
    # The old document's entries went with it; the new ones came.
    running = storage.find_matching(DB, COLL, {"state": "RUNNING"}, hint="by_state")
    assert [d["_id"] for d in running] == ["job-1"]
    assert list(storage.find_matching(DB, COLL, {"state": "WAITING"}, hint="by_state")) == []
    assert list(storage.find_matching(DB, COLL, {"snapshot.tasks.gpus": 0}, hint="by_gpu")) == []
    assert len(list(storage.find_matching(DB, COLL, {"snapshot.tasks.gpus": 3}, hint="by_gpu"))) == 1
    # A projection that excludes fields copies the stored document and cuts the copy.
    cut = secantus.projection.apply_projection(stored, {"snapshot": 0, "code": 0})
    assert "snapshot" not in cut and "code" not in cut and cut["tags"] == ["a", "b", "c"]
    assert "snapshot" in stored and "code" in stored
