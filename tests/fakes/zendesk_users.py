"""The user routes of the fake Zendesk (reference §5.2): create_or_update, search, identities,
merge, `me`, and a webhook's signing secret (§5.7). Mounted by zendesk_routes.add_routes.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.zendesk import Json, ZendeskError, invalid, not_found, public
from tests.fakes.zendesk_routes import J, actor_of, json, live_user, paginate, read

if TYPE_CHECKING:
    from tests.fakes.zendesk import FakeZendesk

IDENTITY_TYPES = ("email", "phone_number", "twitter", "facebook", "google")


def add_user_routes(fake: FakeZendesk, app: web.Application) -> None:
    u = UserRoutes(fake)
    app.router.add_post(f"/api/v2/users{J}", u.create_user)
    app.router.add_post(f"/api/v2/users/create_or_update{J}", u.create_or_update_user)
    app.router.add_get(f"/api/v2/users/search{J}", u.search_users)
    app.router.add_get(f"/api/v2/users/me{J}", u.me)
    app.router.add_get(f"/api/v2/users/{{id:\\d+}}{J}", u.show_user)
    app.router.add_get(f"/api/v2/users/{{id:\\d+}}/identities{J}", u.list_identities)
    app.router.add_post(f"/api/v2/users/{{id:\\d+}}/identities{J}", u.add_identity)
    app.router.add_put(f"/api/v2/users/{{id:\\d+}}/merge{J}", u.merge_users)
    app.router.add_get(f"/api/v2/webhooks/{{id}}/signing_secret{J}", u.signing_secret)
    app.router.add_post(f"/api/v2/webhooks/{{id}}/signing_secret{J}", u.reset_signing_secret)


class UserRoutes:
    """The handlers; each one is a documented Zendesk call."""

    def __init__(self, fake: FakeZendesk) -> None:
        self.fake = fake

    # -- users ------------------------------------------------------------------------
    async def me(self, request: web.Request) -> web.Response:
        user_id = actor_of(request)
        if user_id is None:  # Zendesk answers anonymous callers with a null-id user (◐)
            anonymous = {"id": None, "name": "Anonymous user", "email": "invalid@example.com"}
            return json({"user": {**anonymous, "role": "end-user", "active": True}})
        return json({"user": self.fake.user(user_id)})

    async def show_user(self, request: web.Request) -> web.Response:
        with self.fake.lock:
            user = self.fake._users.get(int(request.match_info["id"]))
            if user is None:
                raise not_found()
            return json({"user": public(user)})

    async def create_user(self, request: web.Request) -> web.Response:
        """Plain create: a taken email or external id is a 422 DuplicateValue."""
        spec, _ = await read(request, "user")
        with self.fake.lock:
            self._check_free(spec, None)
            user = self._new_user(spec)
        return json({"user": user}, 201)

    async def create_or_update_user(self, request: web.Request) -> web.Response:
        """Match by external_id, then email (◐ order): 200 updated, 201 created (§5.2)."""
        spec, _ = await read(request, "user")
        fake = self.fake
        with fake.lock:
            found = fake.find_user(external_id=spec.get("external_id")) or fake.find_user(
                email=spec.get("email")
            )
            self._check_free(spec, found)
            if found is None:
                return json({"user": self._new_user(spec)}, 201)
            for name in ("name", "external_id", "phone", "locale_id"):
                if spec.get(name) is not None:
                    found[name] = spec[name]
            values = {i["value"].lower() for i in fake._identities[found["id"]]}
            wanted = [("email", spec.get("email")), ("phone_number", spec.get("phone"))]
            wanted += [(i.get("type"), i.get("value")) for i in spec.get("identities") or []]
            for kind, value in wanted:
                if kind and value and value.lower() not in values:
                    fake.add_identity(found["id"], kind, value)
                    values.add(value.lower())
            if found["email"] is None and spec.get("email"):
                found["email"] = spec["email"]
            found["updated_at"] = fake.now()
            return json({"user": public(found)})

    def _check_free(self, spec: Json, owner: Json | None) -> None:
        """An email, phone or external id already owned by another user is refused."""
        owner_id = owner["id"] if owner else None
        clash = self.fake.find_user(external_id=spec.get("external_id"))
        if spec.get("external_id") and clash is not None and clash["id"] != owner_id:
            raise invalid("external_id", "External: has already been taken", "DuplicateValue")
        values = [spec.get("email"), spec.get("phone")]
        values += [i.get("value") for i in spec.get("identities") or []]
        for value in filter(None, values):
            holder = self._identity_owner(value)
            if holder is not None and holder != owner_id:
                field = "email" if "@" in value else "value"
                raise invalid(
                    field,
                    f"{field.title()}: {value} is already being used by another user",
                    "DuplicateValue",
                )

    def _identity_owner(self, value: str) -> int | None:
        for uid, identities in self.fake._identities.items():
            if self.fake._users[uid]["active"] and any(
                i["value"].lower() == value.lower() for i in identities
            ):
                return uid
        return None

    def _new_user(self, spec: Json) -> Json:
        if not spec.get("name"):
            raise invalid("name", "Name: is too short (minimum one character)", "TooShort")
        user = self.fake.add_user(
            spec["name"],
            spec.get("email"),
            external_id=spec.get("external_id"),
            phone=spec.get("phone"),
        )
        for identity in spec.get("identities") or []:
            if identity.get("value") not in (spec.get("email"), spec.get("phone")):
                self.fake.add_identity(user["id"], identity["type"], identity["value"])
        return user

    async def search_users(self, request: web.Request) -> web.Response:
        """`?external_id=` reads the database; `?query=` the search index, which may lag."""
        fake, now = self.fake, self.fake.clock()
        external_id = request.query.get("external_id")
        query = request.query.get("query")
        if external_id is None and query is None:
            raise ZendeskError(400, "Bad Request: query or external_id is required")
        with fake.lock:
            found = []
            for user in fake._users.values():
                if not user["active"]:
                    continue
                if external_id is not None:
                    if (user["external_id"] or "").lower() == external_id.lower():
                        found.append(public(user))
                elif user["_indexed_at"] <= now and self._matches(user, query or ""):
                    found.append(public(user))
        return json({"users": found, "next_page": None, "previous_page": None, "count": len(found)})

    def _matches(self, user: Json, query: str) -> bool:
        kind, colon, value = query.partition(":")
        value = value.strip().strip('"').lower() if colon else query.strip().lower()
        identities = [i["value"].lower() for i in self.fake._identities[user["id"]]]
        if colon and kind in ("email", "phone"):
            return value in identities
        if colon and kind == "external_id":
            return (user["external_id"] or "").lower() == value
        if colon and kind == "name":
            return value in user["name"].lower()
        return value in user["name"].lower() or value in identities

    async def list_identities(self, request: web.Request) -> web.Response:
        with self.fake.lock:
            user_id = int(request.match_info["id"])
            if user_id not in self.fake._users:
                raise not_found()
            items = copy.deepcopy(self.fake._identities[user_id])
        return json(paginate(request, items, "identities"))

    async def add_identity(self, request: web.Request) -> web.Response:
        spec, _ = await read(request, "identity")
        with self.fake.lock:
            user_id = int(request.match_info["id"])
            if user_id not in self.fake._users:
                raise not_found()
            if spec.get("type") not in IDENTITY_TYPES:
                raise invalid("type", "Type: is invalid", "InvalidValue")
            if not spec.get("value"):
                raise invalid("value", "Value: cannot be blank", "BlankValue")
            holder = self._identity_owner(spec["value"])
            if holder is not None:
                raise invalid(
                    "value",
                    f"Value: {spec['value']} is already being used by another user",
                    "DuplicateValue",
                )
            identity = self.fake.add_identity(user_id, spec["type"], spec["value"])
        return json({"identity": identity}, 201)

    async def merge_users(self, request: web.Request) -> web.Response:
        """End users only; the source's tickets and identities go to the target (§5.2)."""
        spec, _ = await read(request, "user")
        fake = self.fake
        with fake.lock:
            source = fake._users.get(int(request.match_info["id"]))
            if source is None or not source["active"]:
                raise not_found()
            target = live_user(self.fake, spec.get("id"), "id")
            if source["id"] == target["id"] or {source["role"], target["role"]} != {"end-user"}:
                raise invalid("base", "Only end users can be merged", "InvalidValue")
            for ticket in fake._tickets.values():
                for name in ("requester_id", "submitter_id"):
                    if ticket[name] == source["id"]:
                        ticket[name] = target["id"]
            for identity in fake._identities[source["id"]]:
                identity.update(user_id=target["id"], primary=False)
                fake._identities[target["id"]].append(identity)
            fake._identities[source["id"]] = []
            if target["external_id"] is None:
                target["external_id"] = source["external_id"]
            source.update(active=False, external_id=None, _merged_into=target["id"])
            target["updated_at"] = fake.now()
            return json({"user": public(target)})

    # -- webhook signing secret (§5.7) ----------------------------------------------------
    async def signing_secret(self, request: web.Request) -> web.Response:
        hook = self._hook(request)
        return json({"signing_secret": {"algorithm": "SHA256", "secret": hook.secret}})

    async def reset_signing_secret(self, request: web.Request) -> web.Response:
        hook = self._hook(request)
        with self.fake.lock:
            hook.secret = f"zd-reset-secret-{self.fake.next_misc_id():06d}"
        return json({"signing_secret": {"algorithm": "SHA256", "secret": hook.secret}}, 201)

    def _hook(self, request: web.Request) -> Any:
        with self.fake.lock:
            for hook in self.fake.hooks.webhooks:
                if hook.id == request.match_info["id"]:
                    return hook
        raise not_found()
