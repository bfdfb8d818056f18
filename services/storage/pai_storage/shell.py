"""The storage shell: storage definitions, who may use them, what jobs mount, and which jobs mount what.

Its database: ``storages`` (definitions, no credential), ``credentials`` (apart, never shown), ``usage``
(the unfinished jobs mounting each storage: reserved when a submission resolves its storages, confirmed by
``job.submitted``, released by ``job.completed``; a reservation no job confirms lapses after
``RESERVATION_S``). A released job keeps a record without storages for ``FINISHED_KEPT_S``: a submission of
that job sent again (a client retrying; the jobs service answers it 202 or 409 once its insert meets the
stored job) then reserves nothing in its name. Grants are the groups' ``acls.storageConfigs``, asked of the
auth service at each check so that a grant or a revocation takes effect at once.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, Literal

from pymongo.errors import DuplicateKeyError

from pai_common.consumer import HandlerContext
from pai_common.contract.events import JobCompleted, JobSubmitted, StorageChanged
from pai_common.contract.rpc import (
    AuthorizeReply,
    AuthorizeRequest,
    DeleteStorageRequest,
    GetStorageRequest,
    ListStoragesRequest,
    PutStorageRequest,
    ResolveStoragesReply,
    ResolveStoragesRequest,
    StorageCredentialsReply,
    StorageCredentialsRequest,
    StorageListReply,
    StorageMessageReply,
    StorageReply,
)
from pai_common.envelope import Envelope
from pai_common.errors import (
    ConflictStorageError,
    ForbiddenUserError,
    InvalidParametersError,
    NoStorageError,
)
from pai_common.service import ServiceApp
from pai_storage import definitions, grants

log = logging.getLogger(__name__)

STORAGES = "storages"
CREDENTIALS = "credentials"
USAGE = "usage"
# How long a submission's reservation holds a storage before its job.submitted confirms it.
RESERVATION_S = 600
# How long a finished job's record stays (a TTL index): as long as a handled message's marker.
FINISHED_KEPT_S = 8 * 24 * 3600


def now_ms() -> int:
    return int(time.time() * 1000)


def _admin_only(admin: bool) -> None:
    if not admin:
        raise ForbiddenUserError("Non-admin is not allow to do this operation.")


def mounts_storages(body: JobSubmitted | JobCompleted) -> bool:
    """Whether a job event concerns a job that mounts storages: only such a job holds a use to record or
    release. The others (most jobs) are acked without a transaction."""
    if isinstance(body, JobSubmitted):
        return bool(body.spec.storages)
    return body.mounted_storages


class StorageService:
    def __init__(self, app: ServiceApp) -> None:
        self.app = app
        app.rpc(
            {
                ListStoragesRequest: self.list_storages,
                GetStorageRequest: self.get,
                PutStorageRequest: self.put,
                DeleteStorageRequest: self.delete,
                ResolveStoragesRequest: self.resolve,
                StorageCredentialsRequest: self.credentials,
            }
        )
        app.on_event(JobSubmitted, JobCompleted, acts_on=mounts_storages)(self.on_job)
        app.on_startup(self._indexes)

    async def _indexes(self, app: ServiceApp) -> None:
        await app.db[USAGE].create_index("storages")
        await app.db[USAGE].create_index("finished_at", expireAfterSeconds=FINISHED_KEPT_S)

    async def _configs(self, username: str, admin: bool) -> tuple[bool, list[str]]:
        """(admin, the storages the user's groups grant), from the auth service."""
        if admin:
            return True, []
        rights = await self.app.bus.request(AuthorizeRequest(username=username), AuthorizeReply)
        return rights.admin, list(rights.storage_configs)

    async def _all(self) -> dict[str, dict[str, Any]]:
        return {str(d["_id"]): d async for d in self.app.db[STORAGES].find({}).sort("_id", 1)}

    # ---- reads --------------------------------------------------------------------------------------

    async def list_storages(self, req: ListStoragesRequest) -> StorageListReply:
        admin, configs = await self._configs(req.username, req.admin)
        shown = grants.visible((await self._all()).values(), admin, configs)
        if req.default_only:
            shown = [d for d in shown if d.get("default")]
        return StorageListReply(storages=[definitions.summary(d) for d in shown])

    async def get(self, req: GetStorageRequest) -> StorageReply:
        admin, configs = await self._configs(req.username, req.admin)
        doc = await self.app.db[STORAGES].find_one({"_id": req.name})
        return StorageReply(
            storage=definitions.detail(grants.check_access(req.name, doc, req.username, admin, configs))
        )

    # ---- admin --------------------------------------------------------------------------------------

    async def put(self, req: PutStorageRequest) -> StorageMessageReply:
        _admin_only(req.admin)
        db = self.app.db
        old = None
        if req.mode == "update":
            assert req.name is not None
            if await db[STORAGES].find_one({"_id": req.name}, {"_id": 1}) is None:
                raise NoStorageError(f"Storage {req.name} is not found.")
            old = await db[CREDENTIALS].find_one({"_id": req.name})
        try:
            checked = definitions.check(req.body, req.name, (old or {}).get("values"))
        except definitions.DefinitionError as exc:
            raise InvalidParametersError(str(exc)) from None
        name = checked.doc["_id"]
        doc = {**checked.doc, "updated_by": req.actor, "updated_at": now_ms()}

        async def write(tx: HandlerContext) -> None:
            if req.mode == "create":
                await tx.db[STORAGES].insert_one(doc, session=tx.session)
            else:
                await tx.db[STORAGES].replace_one({"_id": name}, doc, session=tx.session)
            await tx.db[CREDENTIALS].delete_one({"_id": name}, session=tx.session)
            if checked.credentials:
                await tx.db[CREDENTIALS].insert_one(
                    {"_id": name, "values": checked.credentials}, session=tx.session
                )
            change: Literal["created", "updated"] = "created" if req.mode == "create" else "updated"
            tx.out.event(
                StorageChanged(name=name, change=change, storage_type=doc["type"], by=req.actor, at=now_ms())
            )

        try:
            await self.app.transact(write)
        except DuplicateKeyError:
            raise ConflictStorageError(f"Storage {name} already exists.") from None
        verb = "created" if req.mode == "create" else "updated"
        log.info(f"storage {verb}", extra={"storage": name, "type": doc["type"], "actor": req.actor})
        return StorageMessageReply(message=f"Storage {name} is {verb} successfully.")

    async def delete(self, req: DeleteStorageRequest) -> StorageMessageReply:
        _admin_only(req.admin)
        users = await self.jobs_mounting(req.name)
        if users:
            shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
            raise ConflictStorageError(
                f"Storage {req.name} is mounted by unfinished jobs ({shown}); stop them or wait for them to"
                " end, then delete it."
            )

        async def remove(tx: HandlerContext) -> None:
            deleted = await tx.db[STORAGES].delete_one({"_id": req.name}, session=tx.session)
            if deleted.deleted_count == 0:
                raise NoStorageError(f"Storage {req.name} is not found.")
            await tx.db[CREDENTIALS].delete_one({"_id": req.name}, session=tx.session)
            tx.out.event(StorageChanged(name=req.name, change="deleted", by=req.actor, at=now_ms()))

        await self.app.transact(remove)
        log.info("storage deleted", extra={"storage": req.name, "actor": req.actor})
        return StorageMessageReply(message=f"Storage {req.name} is deleted successfully.")

    async def jobs_mounting(self, name: str) -> list[str]:
        """The unfinished jobs that mount ``name`` (or were just submitted to)."""
        lapsed = now_ms() - RESERVATION_S * 1000
        query = {
            "storages": name,
            "finished_at": {"$exists": False},
            "$or": [{"confirmed": True}, {"reserved_at": {"$gte": lapsed}}],
        }
        return sorted([str(d["_id"]) async for d in self.app.db[USAGE].find(query, {"_id": 1})])

    # ---- jobs ---------------------------------------------------------------------------------------

    async def resolve(self, req: ResolveStoragesRequest) -> ResolveStoragesReply:
        admin, configs = await self._configs(req.username, req.admin)
        mounts = grants.resolve(await self._all(), req.username, admin, configs, req.requests, req.referenced)
        if mounts and req.job_key:
            # Held until job.submitted confirms it (or the reservation lapses: the job was never stored).
            try:
                await self.app.db[USAGE].update_one(
                    {"_id": req.job_key, "confirmed": {"$ne": True}},
                    {"$set": {"storages": [m.name for m in mounts], "reserved_at": now_ms()}},
                    upsert=True,
                )
            except DuplicateKeyError:
                # The job exists, confirmed or finished: this submission is answered as a duplicate.
                pass
        return ResolveStoragesReply(mounts=mounts)

    async def on_job(self, ctx: HandlerContext, env: Envelope) -> None:
        body = env.body
        if isinstance(body, JobSubmitted):
            if body.spec.storages:  # a replayed dead letter comes here without mounts_storages's filter
                await ctx.db[USAGE].update_one(
                    {"_id": body.spec.job_key},
                    {"$set": {"storages": [m.name for m in body.spec.storages], "confirmed": True}},
                    upsert=True,
                    session=ctx.session,
                )
        elif isinstance(body, JobCompleted):
            # Kept without its storages (see the module docstring), confirmed so that no reservation
            # replaces it.
            await ctx.db[USAGE].update_one(
                {"_id": body.job_key},
                {"$set": {"confirmed": True, "finished_at": datetime.now(UTC)}, "$unset": {"storages": ""}},
                session=ctx.session,
            )

    async def credentials(self, req: StorageCredentialsRequest) -> StorageCredentialsReply:
        found = await self.app.db[CREDENTIALS].find_one({"_id": req.storage})
        if found is None:
            raise NoStorageError(f"Storage {req.storage} has no credentials here.")
        log.info("storage credentials given", extra={"storage": req.storage, "node": req.node})
        return StorageCredentialsReply(values=dict(found["values"]))


def build_app() -> ServiceApp:
    app = ServiceApp("storage")
    StorageService(app)
    return app


def main() -> None:
    build_app().run()
