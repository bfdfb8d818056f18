"""The storage shell: storage definitions and which groups may use them, answered over RPC."""

from __future__ import annotations

from pathlib import Path

from pai_common.contract.rpc import (
    AuthorizeReply,
    AuthorizeRequest,
    ListStoragesRequest,
    StorageListReply,
)
from pai_common.service import ServiceApp
from pai_storage.grants import visible

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
        docs = [d async for d in self.app.db[STORAGES].find({}).sort("_id", 1)]
        if req.admin:
            allowed = visible(docs, True, [], [])
        else:
            # The user's groups and their storageConfigs ACLs belong to the auth service.
            rights = await self.app.bus.request(AuthorizeRequest(username=req.username), AuthorizeReply)
            allowed = visible(docs, rights.admin, rights.groups, rights.storage_configs)
        return StorageListReply(
            storages=[
                {"name": d["_id"], "share": True, "volumeName": d["_id"], "default": bool(d.get("default"))}
                for d in allowed
            ]
        )


def build_app() -> ServiceApp:
    app = ServiceApp("storage")
    StorageService(app)
    return app


def main() -> None:
    build_app().run()
