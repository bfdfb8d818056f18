"""Users and groups over RPC: OpenPAI's shapes and errors; every change audited and published.

The actor of each request is the caller the gateway verified; whether the actor is an admin is read here,
from the actor's groups, never taken from the request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from pai_auth import audit, rights, token_records
from pai_common.consumer import HandlerContext
from pai_common.contract.events import GroupChanged, UserChanged
from pai_common.contract.rpc import (
    AuthMessageReply,
    CreateGroupRequest,
    CreateUserRequest,
    DeleteGroupRequest,
    DeleteUserRequest,
    GetGroupRequest,
    GetUserRequest,
    GroupListReply,
    GroupMembersReply,
    GroupMembersRequest,
    GroupReply,
    ListGroupsRequest,
    ListUsersRequest,
    UpdateGroupRequest,
    UpdateUserRequest,
    UserListReply,
    UserReply,
)
from pai_common.errors import (
    ConflictGroupError,
    ConflictUserError,
    ForbiddenUserError,
    IncorrectPasswordError,
    InvalidParametersError,
    NoGroupError,
    NoUserError,
    NoVirtualClusterError,
    RemoveAdminError,
)
from pai_common.service import ServiceApp

USERS = "users"
GROUPS = "groups"
# OpenPAI's words, which its clients compare.
NON_ADMIN = "Non-admin is not allow to do this operation."
# OpenPAI answers a missing user 404 when it is to be changed, 400 when it is read (and at login).
CHANGED_USER_MISSING = 404

Groups = dict[str, dict[str, Any]]


def now_ms() -> int:
    return int(time.time() * 1000)


class Directory:
    def __init__(self, app: ServiceApp, hasher: PasswordHasher) -> None:
        self.app = app
        self.hasher = hasher

    def handlers(self) -> dict[Any, Callable[[Any], Awaitable[Any]]]:
        return {
            GetUserRequest: self.get_user,
            ListUsersRequest: self.list_users,
            CreateUserRequest: self.create_user,
            UpdateUserRequest: self.update_user,
            DeleteUserRequest: self.delete_user,
            GetGroupRequest: self.get_group,
            ListGroupsRequest: self.list_groups,
            CreateGroupRequest: self.create_group,
            UpdateGroupRequest: self.update_group,
            DeleteGroupRequest: self.delete_group,
            GroupMembersRequest: self.group_members,
        }

    # ---- reads ---------------------------------------------------------------------------------------

    async def groups(self, session: AsyncClientSession | None = None) -> Groups:
        return {str(g["_id"]): g async for g in self.app.db[GROUPS].find({}, session=session)}

    async def user(
        self, username: str, session: AsyncClientSession | None = None, missing_status: int | None = None
    ) -> dict[str, Any]:
        user = await self.app.db[USERS].find_one({"_id": username}, session=session)
        if user is None:
            raise NoUserError(f"User {username} is not found.", missing_status)
        return user

    async def is_admin(self, username: str) -> bool:
        user = await self.app.db[USERS].find_one({"_id": username}, {"grouplist": 1})
        if user is None:
            return False
        return rights.rights_of(user.get("grouplist", []), await self.groups()).admin

    async def require_admin(self, actor: str) -> None:
        if not await self.is_admin(actor):
            raise ForbiddenUserError(NON_ADMIN)

    async def get_user(self, req: GetUserRequest) -> UserReply:
        return UserReply(user=rights.user_view(await self.user(req.username), await self.groups(), req.actor))

    async def list_users(self, req: ListUsersRequest) -> UserListReply:
        groups = await self.groups()
        users = [u async for u in self.app.db[USERS].find({}).sort("_id", 1)]
        return UserListReply(users=[rights.user_view(u, groups, req.actor) for u in users])

    async def get_group(self, req: GetGroupRequest) -> GroupReply:
        group = await self.app.db[GROUPS].find_one({"_id": req.groupname})
        if group is None:
            raise NoGroupError(f"Group {req.groupname} is not found.")
        return GroupReply(group=rights.group_view(group))

    async def list_groups(self, req: ListGroupsRequest) -> GroupListReply:
        return GroupListReply(groups=[rights.group_view(g) for g in (await self.groups()).values()])

    async def group_members(self, req: GroupMembersRequest) -> GroupMembersReply:
        await self.require_admin(req.actor)
        groups = await self.groups()
        # OpenPAI lists the members of an unknown group as nobody: 200 with an empty list.
        members = [
            {"username": u["_id"], "clusterAdmin": rights.rights_of(u.get("grouplist", []), groups).admin}
            async for u in self.app.db[USERS].find({"grouplist": req.groupname}).sort("_id", 1)
        ]
        return GroupMembersReply(members=members)

    # ---- users ---------------------------------------------------------------------------------------

    async def create_user(self, req: CreateUserRequest) -> AuthMessageReply:
        await self.require_admin(req.actor)
        rights.check_extension_size(req.extension)
        groups = await self.groups()
        _check_virtual_clusters(req.virtual_clusters, groups)
        grouplist = rights.grouplist_for(req.admin, req.virtual_clusters)
        password_hash = await asyncio.to_thread(self.hasher.hash, req.password)
        doc = {
            "_id": req.username,
            "password_hash": password_hash,
            "grouplist": grouplist,
            "email": req.email,
            "extension": req.extension,
        }

        async def work(tx: HandlerContext) -> None:
            await tx.db[USERS].insert_one(doc, session=tx.session)
            self.user_changed(tx, req.username, "created", grouplist, groups, req.actor)
            await audit.record(
                tx, req.actor, "user.created", req.username, {"grouplist": grouplist, "email": req.email}
            )

        try:
            await self.app.transact(work)
        except DuplicateKeyError:
            raise ConflictUserError(f"User name {req.username} already exists.") from None
        return AuthMessageReply(message="User is created successfully")

    async def update_user(self, req: UpdateUserRequest) -> AuthMessageReply:
        actor_admin = await self.is_admin(req.actor)
        if not actor_admin and req.actor != req.username:
            raise ForbiddenUserError(NON_ADMIN)
        changes_rights = any(
            v is not None
            for v in (req.admin, req.virtual_clusters, req.grouplist, req.add_group, req.remove_group)
        )
        if changes_rights and not actor_admin:
            raise ForbiddenUserError(NON_ADMIN)
        current = await self.user(req.username, missing_status=CHANGED_USER_MISSING)
        password_hash: str | None = None
        if req.password is not None:
            if not actor_admin:
                await self._check_old_password(current, req.old_password)
            # The same password again changes nothing, and so ends no session.
            if not await self._matches(current, req.password):
                password_hash = await asyncio.to_thread(self.hasher.hash, req.password)
        if req.extension is not None:
            rights.check_extension_size(req.extension)

        async def work(tx: HandlerContext) -> None:
            user = await self.user(req.username, tx.session, CHANGED_USER_MISSING)
            groups = await self.groups(tx.session)
            update: dict[str, Any] = {}
            fields: list[str] = []
            if req.email is not None:
                update["email"], fields = req.email, [*fields, "email"]
            if req.extension is not None:
                ext = user.get("extension") or {}
                new_ext = rights.merge(ext, req.extension) if req.merge_extension else dict(req.extension)
                rights.check_extension_size(new_ext)
                update["extension"], fields = new_ext, [*fields, "extension"]
            grouplist = _new_grouplist(req, list(user.get("grouplist", [])), groups)
            if grouplist != user.get("grouplist", []):
                if rights.rights_of(user.get("grouplist", []), groups).admin:
                    await self._keep_an_admin(tx, req.username, grouplist, groups)
                update["grouplist"], fields = grouplist, [*fields, "grouplist"]
            if password_hash is not None:
                update["password_hash"], fields = password_hash, [*fields, "password"]
            if not update:
                return
            await tx.db[USERS].update_one({"_id": req.username}, {"$set": update}, session=tx.session)
            change = "password_changed" if password_hash is not None else "updated"
            self.user_changed(tx, req.username, change, grouplist, groups, req.actor)
            details: dict[str, Any] = {"fields": fields}
            if "grouplist" in update:
                details["grouplist"] = grouplist
            await audit.record(tx, req.actor, "user.updated", req.username, details)
            if password_hash is not None:
                # OpenPAI's rule: a new password ends every session, application tokens survive; but never
                # the session that made the change, whose client would fail every later call.
                others: dict[str, Any] = {"application": False}
                if req.keep_token_id:
                    others["_id"] = {"$ne": req.keep_token_id}
                await token_records.revoke(tx, req.username, others, "password_changed", req.actor)

        await self.app.transact(work)
        return AuthMessageReply(message="Update user information successfully.")

    async def delete_user(self, req: DeleteUserRequest) -> AuthMessageReply:
        await self.require_admin(req.actor)

        async def work(tx: HandlerContext) -> None:
            user = await self.user(req.username, tx.session, CHANGED_USER_MISSING)
            groups = await self.groups(tx.session)
            grouplist = list(user.get("grouplist", []))
            if rights.rights_of(grouplist, groups).admin:
                raise RemoveAdminError("Admin user can not be removed.")
            await tx.db[USERS].delete_one({"_id": req.username}, session=tx.session)
            await token_records.revoke(tx, req.username, {}, "user_deleted", req.actor)
            self.user_changed(tx, req.username, "deleted", grouplist, groups, req.actor)
            await audit.record(tx, req.actor, "user.deleted", req.username)

        await self.app.transact(work)
        return AuthMessageReply(message="user is removed successfully")

    async def _matches(self, user: Mapping[str, Any], password: str) -> bool:
        try:
            return bool(await asyncio.to_thread(self.hasher.verify, str(user["password_hash"]), password))
        except VerificationError:
            return False

    async def _check_old_password(self, user: Mapping[str, Any], old: str | None) -> None:
        if not old:
            raise InvalidParametersError("oldPassword is required to change your own password")
        if not user.get("password_hash"):
            raise ForbiddenUserError("You sign in with OpenID Connect and have no password to change.")
        try:
            await asyncio.to_thread(self.hasher.verify, str(user["password_hash"]), old)
        except VerificationError:
            raise IncorrectPasswordError("Password is incorrect.") from None

    async def _keep_an_admin(
        self, tx: HandlerContext, username: str, grouplist: list[str], groups: Groups
    ) -> None:
        """Refuse the change that would leave the platform without any admin."""
        if rights.rights_of(grouplist, groups).admin:
            return
        admin_groups = [name for name, g in groups.items() if rights.acls_of(g).get("admin")]
        others = await tx.db[USERS].count_documents(
            {"_id": {"$ne": username}, "grouplist": {"$in": admin_groups}}, session=tx.session
        )
        if others == 0:
            raise RemoveAdminError("The last admin can not lose admin rights.")

    def user_changed(
        self,
        tx: HandlerContext,
        username: str,
        change: Any,
        grouplist: list[str],
        groups: Groups,
        actor: str,
    ) -> None:
        tx.out.event(
            UserChanged(
                username=username,
                change=change,
                admin=rights.rights_of(grouplist, groups).admin,
                grouplist=grouplist,
                actor=actor,
                at=now_ms(),
            )
        )

    # ---- groups --------------------------------------------------------------------------------------

    async def create_group(self, req: CreateGroupRequest) -> AuthMessageReply:
        await self.require_admin(req.actor)
        extension = rights.normalize_acls(req.extension)
        rights.check_extension_size(extension)
        doc = {
            "_id": req.groupname,
            "description": req.description,
            "externalName": req.external_name,
            "extension": extension,
        }

        async def work(tx: HandlerContext) -> None:
            await tx.db[GROUPS].insert_one(doc, session=tx.session)
            self._group_changed(tx, req.groupname, "created", extension, req.actor)
            await audit.record(tx, req.actor, "group.created", req.groupname, {"acls": extension["acls"]})

        try:
            await self.app.transact(work)
        except DuplicateKeyError:
            raise ConflictGroupError(f"Group name {req.groupname} already exists.") from None
        return AuthMessageReply(message="group is created successfully")

    async def update_group(self, req: UpdateGroupRequest) -> AuthMessageReply:
        await self.require_admin(req.actor)

        async def work(tx: HandlerContext) -> None:
            group = await tx.db[GROUPS].find_one({"_id": req.groupname}, session=tx.session)
            if group is None:
                raise NoGroupError(f"Group {req.groupname} is not found.", 404)
            update: dict[str, Any] = {}
            if req.description is not None:
                update["description"] = req.description
            if req.external_name is not None:
                update["externalName"] = req.external_name
            extension = dict(group.get("extension") or {})
            if req.extension is not None:
                merged = rights.merge(extension, req.extension) if req.merge_extension else req.extension
                extension = rights.normalize_acls(merged)
                rights.check_extension_size(extension)
                if req.groupname == rights.ADMIN_GROUP and not extension["acls"]["admin"]:
                    raise ForbiddenUserError("The admin ACL of admingroup can not be removed.")
                await self._keep_an_admin_without(tx, req.groupname, extension)
                update["extension"] = extension
            if not update:
                return
            await tx.db[GROUPS].update_one({"_id": req.groupname}, {"$set": update}, session=tx.session)
            self._group_changed(tx, req.groupname, "updated", extension, req.actor)
            await audit.record(
                tx,
                req.actor,
                "group.updated",
                req.groupname,
                {"fields": sorted(update), "acls": rights.acls_of({"extension": extension})},
            )

        await self.app.transact(work)
        return AuthMessageReply(message="group is updated successfully")

    async def delete_group(self, req: DeleteGroupRequest) -> AuthMessageReply:
        await self.require_admin(req.actor)
        if req.groupname in rights.BUILT_IN_GROUPS:
            raise ForbiddenUserError(f"The built-in group {req.groupname} can not be removed.")

        async def work(tx: HandlerContext) -> None:
            group = await tx.db[GROUPS].find_one({"_id": req.groupname}, session=tx.session)
            if group is None:
                raise NoGroupError(f"Group {req.groupname} is not found.")
            await self._keep_an_admin_without(tx, req.groupname, None)
            await tx.db[GROUPS].delete_one({"_id": req.groupname}, session=tx.session)
            await tx.db[USERS].update_many(
                {"grouplist": req.groupname}, {"$pull": {"grouplist": req.groupname}}, session=tx.session
            )
            self._group_changed(tx, req.groupname, "deleted", {}, req.actor)
            await audit.record(tx, req.actor, "group.deleted", req.groupname)

        await self.app.transact(work)
        return AuthMessageReply(message="group is removed successfully")

    async def _keep_an_admin_without(
        self, tx: HandlerContext, groupname: str, new_extension: dict[str, Any] | None
    ) -> None:
        """Refuse a group change or deletion after which no user would be an admin."""
        groups = await self.groups(tx.session)
        if new_extension is None:
            groups.pop(groupname, None)
        else:
            groups[groupname] = {**groups.get(groupname, {}), "extension": new_extension}
        admin_groups = [name for name, g in groups.items() if rights.acls_of(g).get("admin")]
        if not await tx.db[USERS].count_documents({"grouplist": {"$in": admin_groups}}, session=tx.session):
            raise RemoveAdminError("The change would leave no admin.")

    def _group_changed(
        self, tx: HandlerContext, groupname: str, change: Any, extension: Mapping[str, Any], actor: str
    ) -> None:
        tx.out.event(
            GroupChanged(
                groupname=groupname,
                change=change,
                acls=rights.acls_of({"extension": extension}),
                actor=actor,
                at=now_ms(),
            )
        )


def _check_virtual_clusters(vcs: list[str], groups: Groups) -> None:
    """OpenPAI's basic mode: each VC a user is given is a group of the same name."""
    for vc in vcs:
        if vc not in groups:
            # 400 here, as OpenPAI answers an unknown VC in a user body.
            raise NoVirtualClusterError(f"Virtual cluster {vc} is not found.", 400)


def _new_grouplist(req: UpdateUserRequest, current: list[str], groups: Groups) -> list[str]:
    """The grouplist after an update's rights fields, each name checked to exist."""
    grouplist = list(current)
    if req.grouplist is not None:
        for name in req.grouplist:
            if name not in groups:
                raise NoGroupError(f"Group {name} is not found.", 404)
        grouplist = list(dict.fromkeys(req.grouplist))
    if req.virtual_clusters is not None:
        _check_virtual_clusters(req.virtual_clusters, groups)
        is_admin = rights.ADMIN_GROUP in grouplist
        grouplist = rights.grouplist_for(is_admin, req.virtual_clusters)
    if req.admin is not None:
        grouplist = [g for g in grouplist if g != rights.ADMIN_GROUP]
        if req.admin:
            grouplist.append(rights.ADMIN_GROUP)
    if req.add_group is not None:
        if req.add_group not in groups:
            raise NoGroupError(f"Group {req.add_group} is not found.", 404)
        if req.add_group not in grouplist:
            grouplist.append(req.add_group)
    if req.remove_group is not None:
        grouplist = [g for g in grouplist if g != req.remove_group]
    return grouplist
