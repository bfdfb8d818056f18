"""The marketplace shell: templates in MongoDB, answered over RPC; the rules are in ``catalog``.

Each change is one single-document write (atomic on its own), so no transaction and no outbox are
needed: the marketplace publishes no events. A non-admin caller's groups come from the auth service's
``auth.authorize`` RPC, asked once per request that needs them.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

import yaml
from pymongo import ReturnDocument

from pai_common.contract.rpc import (
    AuthorizeReply,
    AuthorizeRequest,
    CreateTemplateRequest,
    DeleteTemplateRequest,
    GetTemplateRequest,
    ListTemplatesRequest,
    MarketplaceCaller,
    StarTemplateRequest,
    TemplateFields,
    TemplateListReply,
    TemplateMessageReply,
    TemplateReply,
    UpdateTemplateRequest,
    UseTemplateRequest,
)
from pai_common.errors import ForbiddenUserError, InvalidParametersError, NoTemplateError
from pai_common.service import ServiceApp
from pai_marketplace import catalog

TEMPLATES = "templates"


def _now_ms() -> int:
    return int(time.time() * 1000)


def seed_templates() -> list[dict[str, Any]]:
    """The templates the platform ships (one YAML file each under ``seeds/``)."""
    out = []
    for entry in sorted(resources.files("pai_marketplace").joinpath("seeds").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            out.append(yaml.safe_load(entry.read_text(encoding="utf-8")))
    return out


class MarketplaceService:
    def __init__(self, app: ServiceApp) -> None:
        self.app = app
        app.rpc(
            {
                ListTemplatesRequest: self.list,
                GetTemplateRequest: self.get,
                CreateTemplateRequest: self.create,
                UpdateTemplateRequest: self.update,
                DeleteTemplateRequest: self.delete,
                StarTemplateRequest: self.star,
                UseTemplateRequest: self.use,
            }
        )
        app.on_startup(self._seed)

    async def _seed(self, app: ServiceApp) -> None:
        # Inserted once: an admin's later edit of a shipped template is kept across restarts.
        now = _now_ms()
        for seed in seed_templates():
            fields = catalog.clean_fields(seed, creating=True)
            await app.db[TEMPLATES].update_one(
                {"_id": seed["id"]},
                {
                    "$setOnInsert": {
                        **fields,
                        "author": catalog.PLATFORM_AUTHOR,
                        "stars": [],
                        "useCount": 0,
                        "createdTime": now,
                        "updatedTime": now,
                    }
                },
                upsert=True,
            )

    async def _groups(self, caller: MarketplaceCaller) -> list[str]:
        if caller.admin:
            return []
        rights = await self.app.bus.request(AuthorizeRequest(username=caller.username), AuthorizeReply)
        return rights.groups

    async def _visible_doc(self, caller: MarketplaceCaller, template_id: str) -> dict[str, Any]:
        doc = await self.app.db[TEMPLATES].find_one({"_id": template_id})
        # A template the caller may not see answers as one that does not exist.
        if doc is None or not catalog.visible(doc, caller.username, caller.admin, await self._groups(caller)):
            raise NoTemplateError(f"Template {template_id} is not found.")
        return doc

    async def list(self, req: ListTemplatesRequest) -> TemplateListReply:
        groups = await self._groups(req)
        docs = [d async for d in self.app.db[TEMPLATES].find({}, {"protocol": 0})]
        found = [
            d
            for d in docs
            if catalog.visible(d, req.username, req.admin, groups)
            and catalog.matches(d, req.keyword.strip(), req.tag.strip(), req.author.strip())
        ]
        page = catalog.ordered(found, req.order)[req.offset : req.offset + req.limit]
        return TemplateListReply(
            templates=[catalog.view(d, req.username, req.admin, with_protocol=False) for d in page],
            total=len(found),
        )

    async def get(self, req: GetTemplateRequest) -> TemplateReply:
        doc = await self._visible_doc(req, req.id)
        return TemplateReply(template=catalog.view(doc, req.username, req.admin))

    @staticmethod
    def _given(req: TemplateFields) -> dict[str, Any]:
        return {
            "name": req.name,
            "description": req.description,
            "tags": req.tags,
            "protocol": req.protocol,
            "visibility": req.visibility,
            "groups": req.groups,
        }

    async def create(self, req: CreateTemplateRequest) -> TemplateReply:
        fields = catalog.clean_fields(self._given(req), creating=True)
        now = _now_ms()
        doc = {
            "_id": catalog.new_id(fields["name"]),
            **fields,
            "author": req.username,
            "stars": [],
            "useCount": 0,
            "createdTime": now,
            "updatedTime": now,
        }
        await self.app.db[TEMPLATES].insert_one(doc)
        return TemplateReply(template=catalog.view(doc, req.username, req.admin))

    async def update(self, req: UpdateTemplateRequest) -> TemplateReply:
        doc = await self._visible_doc(req, req.id)
        if not catalog.may_edit(doc, req.username, req.admin):
            raise ForbiddenUserError(f"Only its author or an admin may change template {req.id}.")
        fields = catalog.clean_fields(self._given(req), creating=False)
        merged = {**doc, **fields}
        if merged.get("visibility") == "groups" and not merged.get("groups"):
            raise InvalidParametersError(
                "groups: name at least one group when the template is visible to groups"
            )
        updated = await self.app.db[TEMPLATES].find_one_and_update(
            {"_id": req.id},
            {"$set": {**fields, "updatedTime": _now_ms()}},
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:
            raise NoTemplateError(f"Template {req.id} is not found.")
        return TemplateReply(template=catalog.view(updated, req.username, req.admin))

    async def delete(self, req: DeleteTemplateRequest) -> TemplateMessageReply:
        doc = await self._visible_doc(req, req.id)
        if not catalog.may_edit(doc, req.username, req.admin):
            raise ForbiddenUserError(f"Only its author or an admin may delete template {req.id}.")
        await self.app.db[TEMPLATES].delete_one({"_id": req.id})
        return TemplateMessageReply(message=f"Template {req.id} is deleted.")

    async def star(self, req: StarTemplateRequest) -> TemplateReply:
        await self._visible_doc(req, req.id)
        change = {"$addToSet": {"stars": req.username}} if req.starred else {"$pull": {"stars": req.username}}
        updated = await self.app.db[TEMPLATES].find_one_and_update(
            {"_id": req.id}, change, return_document=ReturnDocument.AFTER
        )
        if updated is None:
            raise NoTemplateError(f"Template {req.id} is not found.")
        return TemplateReply(template=catalog.view(updated, req.username, req.admin))

    async def use(self, req: UseTemplateRequest) -> TemplateReply:
        await self._visible_doc(req, req.id)
        updated = await self.app.db[TEMPLATES].find_one_and_update(
            {"_id": req.id}, {"$inc": {"useCount": 1}}, return_document=ReturnDocument.AFTER
        )
        if updated is None:
            raise NoTemplateError(f"Template {req.id} is not found.")
        return TemplateReply(template=catalog.view(updated, req.username, req.admin))


def build_app() -> ServiceApp:
    app = ServiceApp("marketplace")
    MarketplaceService(app)
    return app


def main() -> None:
    build_app().run()
