"""The storage shell: storage definitions and which groups may use them, answered over RPC."""

from __future__ import annotations

from pathlib import Path

from pai_common.contract.rpc import ListStoragesRequest, StorageListReply
from pai_common.service import ServiceApp

STORAGES = "storages"


class StorageService:
    def __init__(self, app: ServiceApp) -> None:
        self.app = app
        app.rpc({ListStoragesRequest: self.list})
        app.on_startup(self._seed)

    async def _seed(self, app: ServiceApp) -> None:
        # One machine gets one shared folder under the data directory, open to the default group.
        shared = Path(app.settings.data_dir).resolve() / "storage" / "shared"
        shared.mkdir(parents=True, exist_ok=True)
        await app.db[STORAGES].update_one(
            {"_id": "local"},
            {
                "$setOnInsert": {
                    "type": "local",
                    "path": str(shared),
                    "readOnly": False,
                    "groups": ["default"],
                    "default": True,
                }
            },
            upsert=True,
        )

    async def list(self, req: ListStoragesRequest) -> StorageListReply:
        # Group grants arrive with the auth service's group events; until then the default group's.
        query = {} if req.admin else {"groups": "default"}
        docs = [d async for d in self.app.db[STORAGES].find(query).sort("_id", 1)]
        return StorageListReply(
            storages=[
                {"name": d["_id"], "share": True, "volumeName": d["_id"], "default": bool(d.get("default"))}
                for d in docs
            ]
        )


def build_app() -> ServiceApp:
    app = ServiceApp("storage")
    StorageService(app)
    return app


def main() -> None:
    build_app().run()
