"""The MongoDB-wire server starts without Shapely and numpy (pai_common.deferred_geo) and still answers
geo queries: the first one loads them; a malformed geometry is still the client's BadValue."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure, WriteError

from pai_common.embedded import ServerProcess, start_mongo

PROBE = """
import sys
import pai_common.mongo_server
from pai_common import deferred_geo
deferred_geo.defer()
from secantus import SecantusDBServer
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"shapely", "numpy", "s2sphere", "nats"})
print(",".join(heavy) or "-")
"""


def test_the_server_imports_neither_shapely_numpy_nor_nats() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["-"]


def mapped(pid: int, library: str) -> bool:
    return library in Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_mongo(tmp_path)
    yield server
    server.stop()


def test_a_geo_query_loads_them_and_is_answered(server: ServerProcess) -> None:
    client: MongoClient[dict[str, object]] = MongoClient(server.url)
    places = client.geo_test.places
    places.insert_many([{"_id": "plain", "n": 1}])
    assert places.count_documents({"n": 1}) == 1
    assert not mapped(server.proc.pid, "shapely")  # the usual work loads nothing geo

    places.create_index([("where", "2dsphere")])
    places.insert_many(
        [
            {"_id": "zurich", "where": {"type": "Point", "coordinates": [8.54, 47.37]}},
            {"_id": "bern", "where": {"type": "Point", "coordinates": [7.45, 46.95]}},
            {"_id": "paris", "where": {"type": "Point", "coordinates": [2.35, 48.86]}},
        ]
    )
    near_zurich = {"where": {"$near": {"$geometry": {"type": "Point", "coordinates": [8.5, 47.4]}}}}
    assert [d["_id"] for d in places.find(near_zurich)] == ["zurich", "bern", "paris"]
    switzerland = {
        "type": "Polygon",
        "coordinates": [[[5.9, 45.8], [10.5, 45.8], [10.5, 47.8], [5.9, 47.8], [5.9, 45.8]]],
    }
    within = places.find({"where": {"$geoWithin": {"$geometry": switzerland}}})
    assert sorted(str(d["_id"]) for d in within) == ["bern", "zurich"]
    assert mapped(server.proc.pid, "shapely")

    with pytest.raises(OperationFailure) as refused:
        places.find_one({"where": {"$geoWithin": {"$polygon": [[0, 0], [1, 1]]}}})
    assert refused.value.code == 2  # BadValue, as before: the GeoError SecantusDB catches
    assert "$polygon must have at least 3 points" in str(refused.value)
    # Raised by the real module, caught by SecantusDB's storage as the GeoError it imported at start.
    with pytest.raises(WriteError) as bad_point:
        places.insert_one({"_id": "nowhere", "where": {"type": "Point", "coordinates": [200.0, 0.0]}})
    assert "longitude 200.0 out of 2dsphere range" in str(bad_point.value)
    client.close()
