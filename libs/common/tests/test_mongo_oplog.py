"""The embedded MongoDB-wire server writes no oplog, and still runs transactions as a replica set.

No service reads a change stream (they learn of changes over NATS), so `pai_common.mongo_server` stops
SecantusDB's oplog: each write then costs no oplog entry (a BSON encode and a table write per document).
Transactions need the replica set's answers to `hello`, which stay.
"""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import MongoClient

from pai_common.embedded import ServerProcess


def test_writes_leave_no_oplog_entry_and_transactions_commit(mongo_server: ServerProcess) -> None:
    """On the tests' shared server: no test's writes may leave an entry."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.url)
    try:
        assert client.admin.command("hello").get("setName")  # what drivers need for transactions
        jobs = client[f"oplog_{uuid.uuid4().hex[:8]}"].jobs
        with client.start_session() as session, session.start_transaction():
            jobs.insert_one({"_id": "alice~a", "state": "WAITING"}, session=session)
            jobs.update_one({"_id": "alice~a"}, {"$set": {"state": "RUNNING"}}, session=session)
        jobs.insert_many([{"_id": f"alice~{i}"} for i in range(3)])
        jobs.delete_one({"_id": "alice~0"})
        assert jobs.find_one({"_id": "alice~a"}) == {"_id": "alice~a", "state": "RUNNING"}
        assert jobs.count_documents({}) == 3
        # With its oplog on, SecantusDB lists here a start noop and an entry per document written.
        assert list(client.local["oplog.rs"].find({}, {"op": 1, "ns": 1})) == []
    finally:
        client.close()
