"""WiredTiger keys and values packed with a plan per format give WiredTiger's own bytes and values.

`pai_common.wiredtiger_packing` replaces the packer of WiredTiger's Python cursors in the database server.
Here its functions run beside WiredTiger's own on random values of every format SecantusDB's tables use,
on edge values, and on formats and values it leaves to WiredTiger's own (which must answer, or fail, as
before). A storage on the patched cursors then reads back what it wrote.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import pytest
import wiredtiger  # noqa: F401  (its modules import each other by name from its folder)
from secantus.storage import Storage

from pai_common.wiredtiger_packing import make_packers, plan_wiredtiger_packing

packing = sys.modules["packing"]
intpacking = sys.modules["wiredtiger.intpacking"]
PACK, UNPACK = packing.pack, packing.unpack
fast_pack, fast_unpack = make_packers(PACK, UNPACK, intpacking.pack_int, intpacking.unpack_int)

# Every format SecantusDB's tables are created with (secantus/storage.py), and ours besides.
FORMATS = ["S", "SS", "SSS", "SSSu", "SSq", "SSu", "q", "u", "qq", "uS", "Sqq", "uuu"]
EDGE_INTS = [0, 1, -1, 63, 64, -64, -65, 8191, 8192, 8255, 8256, -8256, -8257, 2**32, 2**63 - 1, -(2**63)]
EDGE_STRS = ["", "a", "pai_jobs", "job~name", "日本語", "a\0b", "\0", "tab\there", "x" * 300]
EDGE_BYTES = [b"", b"\0", b"\0\0\x01", b"\xff" * 3, bytes(range(256)), b"x" * 1000]


def a_value(rng: random.Random, kind: str) -> Any:
    if kind == "q":
        return rng.choice(EDGE_INTS) if rng.random() < 0.4 else rng.randint(-(2**63), 2**63 - 1)
    if kind == "S":
        if rng.random() < 0.4:
            return rng.choice(EDGE_STRS)
        # Any character a string can be encoded with (a lone surrogate fails both alike, tested below).
        return "".join(
            chr(rng.choice([rng.randint(1, 126), rng.randint(0x80, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))
            for _ in range(8)
        )
    return rng.choice(EDGE_BYTES) if rng.random() < 0.4 else rng.randbytes(rng.randint(0, 40))


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_same_bytes_and_values_as_wiredtigers_own(fmt: str) -> None:
    rng = random.Random(fmt)
    for _ in range(400):
        values = [a_value(rng, kind) for kind in fmt]
        packed = PACK(fmt, *values)
        assert fast_pack(fmt, *values) == packed, values
        assert fast_unpack(fmt, packed) == UNPACK(fmt, packed), values


@pytest.mark.parametrize(
    ("fmt", "values"),
    [
        ("", ()),
        ("@SS", ("a", "b")),
        ("S5", ("abcdefgh",)),
        ("Su", ("a", "not bytes")),
        ("SSq", ("a", "b")),
        ("SSq", ("a", "b", 1, 2)),
        ("Qi", (1, -2)),
        ("SU", ("a", b"xy")),
        ("Sx", ("a",)),
    ],
)
def test_what_is_left_to_wiredtiger_gets_its_answer(fmt: str, values: tuple[Any, ...]) -> None:
    try:
        expected: Any = PACK(fmt, *values)
    except Exception as exc:
        with pytest.raises(type(exc)):
            fast_pack(fmt, *values)
        return
    assert fast_pack(fmt, *values) == expected
    assert fast_unpack(fmt, expected) == UNPACK(fmt, expected)


def test_a_lone_surrogate_fails_as_before() -> None:
    with pytest.raises(UnicodeEncodeError):
        PACK("SS", "a", "\udb66")
    with pytest.raises(UnicodeEncodeError):
        fast_pack("SS", "a", "\udb66")


def test_bytes_for_a_string_column_fails_as_before() -> None:
    with pytest.raises(TypeError):
        PACK("SS", "a", b"b")
    with pytest.raises(TypeError):
        fast_pack("SS", "a", b"b")


def test_a_storage_on_the_planned_packer_reads_back_what_it_wrote(tmp_path: Path) -> None:
    swig = sys.modules["swig_wiredtiger"]
    before = swig.pack, swig.unpack
    try:
        assert plan_wiredtiger_packing()
        assert swig.pack is not before[0] and swig.unpack is not before[1]
        planned = swig.pack
        assert plan_wiredtiger_packing() and swig.pack is planned  # a second call changes nothing
        storage = Storage(str(tmp_path / "db"), enable_oplog=False)
        storage.create_index("d", "c", "by_state", {"state": 1, "n": -1})
        docs = [
            {"_id": f"j{i}", "state": ["W", "R", "S"][i % 3], "n": i - 5, "blob": bytes([i])}
            for i in range(30)
        ]
        storage.insert("d", "c", docs)
        storage.update_matching("d", "c", {"_id": "j4"}, {"$set": {"state": "S", "n": 2**40}})
        found = sorted(d["_id"] for d in storage.find_matching("d", "c", {"state": "S"}, hint="by_state"))
        assert found == sorted([f"j{i}" for i in range(30) if i % 3 == 2] + ["j4"])
        assert next(iter(storage.find_matching("d", "c", {"_id": "j7"})))["blob"] == bytes([7])
    finally:
        swig.pack, swig.unpack = before
