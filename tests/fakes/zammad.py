"""A faithful local fake of Zammad's REST API (/api/v1), for the Zammad backend's tests.

Reproduces reference §4 (backends.md): token auth and `From`/`X-On-Behalf-Of` impersonation with
Zammad's 401/403 answers and `X-Failure`; users (me, search with the SQL-fallback substring
semantics, create/update, duplicate email 422); tickets with a first article, `guess:<email>`
customers and custom ticket attributes from the fake's object manager (an attribute it does not
know is silently dropped, as Zammad's `param_cleanup` keeps only model columns); articles with
base64 attachments; `tickets/search` by `condition` (synchronous, like Zammad's SQL selector) or
by `query` (behind a search-index lag); merge with its `200 {"result":"failed"}` quirk; errors
as `{"error","error_human"}`. State and accessors: zammad_state.py; webhooks: zammad_hooks.py.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.zammad_search import ZammadSearch, nested_params
from tests.fakes.zammad_state import (
    API,
    EMAIL,
    PRIORITIES,
    ROLES,
    STATES,
    TICKET_COLUMNS,
    USER_COLUMNS,
    Ctx,
    ZammadError,
    _inspect,
    _lookup,
    _not_found,
    _text,
)  # fmt: skip

Handler = Callable[[web.Request, Ctx], Awaitable[web.StreamResponse]]
INACTIVE = (
    "Login failed. Have you double-checked your credentials and completed the email "
    "verification step?"
)


def _ok(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class FakeZammad(ZammadSearch):
    """Zammad at `url` + /api/v1. The API user (token `token`) is an Admin+Agent by default.

    Flags: `api_roles` (drop "Admin" to get the `From` 403), `ticket_attributes` (the custom
    Ticket attributes that exist; the first is helpline's marker), `api_token_access`,
    `elasticsearch` (users search fields), `search_index_lag` (seconds a ticket stays invisible
    to plain `query`), `time_scale` (webhook retry waits), `webhook_timeout`, `clock`.
    """

    def routes(self, app: web.Application) -> None:
        add = app.router.add_route
        add("GET", API + "/users/me", self._wrap(self._me))
        add("GET", API + "/users/search", self._wrap(self._user_search))
        add("POST", API + "/users", self._wrap(self._user_create))
        add("PUT", API + r"/users/{id:\d+}", self._wrap(self._user_update))
        add("GET", API + r"/users/{id:\d+}", self._wrap(self._user_show))
        for method in ("GET", "POST"):  # before /tickets/{id}
            add(method, API + "/tickets/search", self._wrap(self._ticket_search))
        add("POST", API + "/tickets", self._wrap(self._ticket_create))
        add("GET", API + r"/tickets/{id:\d+}", self._wrap(self._ticket_show))
        add("PUT", API + r"/tickets/{id:\d+}", self._wrap(self._ticket_update))
        add("POST", API + "/ticket_articles", self._wrap(self._article_create))
        add("GET", API + r"/ticket_articles/{id:\d+}", self._wrap(self._article_show))
        add("GET", API + r"/ticket_articles/by_ticket/{id:\d+}", self._wrap(self._by_ticket))
        merge = API + r"/ticket_merge/{src:\d+}/{number}"
        add("PUT", merge, self._wrap(self._merge))
        file = API + r"/ticket_attachment/{t:\d+}/{a:\d+}/{id:\d+}"
        add("GET", file, self._wrap(self._attachment))
        add("GET", API + "/object_manager_attributes", self._wrap(self._attributes))

    # -- auth and errors ------------------------------------------------------
    def _wrap(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                with self.lock:
                    ctx = self._auth(request)
                return await handler(request, ctx)
            except ZammadError as err:
                body = {"error": err.error} | ({"error_human": err.error} if err.human else {})
                failure = {"X-Failure": err.error} if err.status in (401, 403) else {}
                return web.json_response(body, status=err.status, headers=failure)

        return run

    def _auth(self, request: web.Request) -> Ctx:
        header = request.headers.get("Authorization", "")
        if not header:
            raise ZammadError(403, "Authentication required")
        if header.lower().startswith("basic "):  # the fake holds no passwords
            raise ZammadError(401, "Invalid BasicAuth credentials")
        # Rails' token parser: `Token token="…"`, `Token token=…` (or `Bearer …`)
        found = re.match(r'^(?:Token|Bearer)\s+(?:token=)?"?([^",\s]+)"?', header)
        if not found:
            raise ZammadError(403, "Authentication required")
        if not self.api_token_access:
            raise ZammadError(403, "API token access disabled!")
        uid, expires = self.tokens.get(found.group(1), (0, None))
        if not uid:
            raise ZammadError(401, "Can't find User for Token")
        if expires is not None and self.clock() >= expires:
            raise ZammadError(401, "Not authorized (token expired)!")
        real = self.users_[uid]
        if not real["active"]:
            raise ZammadError(401, INACTIVE)
        on_behalf = request.headers.get("From") or request.headers.get("X-On-Behalf-Of")
        if not on_behalf:
            return Ctx(real)
        if 1 not in real["role_ids"]:  # impersonation needs admin.user
            raise ZammadError(403, "Current user has no permission to use 'From'/'X-On-Behalf-Of'!")
        user = self._user_by(on_behalf)
        if user is None:
            raise ZammadError(403, f"No such user '{on_behalf}'")
        return Ctx(user)

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            data = orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError as err:
            raise ZammadError(
                400, f"Error occurred while parsing request parameters: {err}"
            ) from err
        if not isinstance(data, dict):
            raise ZammadError(400, "Error occurred while parsing request parameters")
        return data

    @staticmethod
    def _need_agent(ctx: Ctx) -> None:
        if not ctx.agent:
            raise ZammadError(403, "Not authorized")

    # -- users ------------------------------------------------------------------
    async def _me(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        with self.lock:
            return _ok(self._user_json(ctx.user))

    async def _user_show(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        with self.lock:
            user = self._user(int(request.match_info["id"]))
            if not ctx.agent and user["id"] != ctx.user["id"]:
                raise ZammadError(403, "Not authorized")
            return _ok(self._user_json(user))

    async def _user_search(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        self._need_agent(ctx)
        query = request.query.get("query", "").replace("*", "").strip().lower()
        limit = min(int(request.query.get("limit") or request.query.get("per_page") or 100), 500)
        fields = ["firstname", "lastname", "email", "login"]
        if self.elasticsearch:  # ◐ ES query-string: `field:value` or any field incl. phone
            fields += ["phone", "mobile"]
            scoped = re.match(r'^(\w+):"?(.*?)"?$', query)
            if scoped and scoped.group(1) in USER_COLUMNS:
                fields, query = [scoped.group(1)], scoped.group(2)
        with self.lock:
            found = [
                self._user_json(u)
                for u in self.users_.values()
                if u["id"] != 1 and any(query in str(u[f] or "").lower() for f in fields)
            ]
        return _ok(found[:limit])

    def _check_email(self, email: str, uid: int | None) -> str:
        email = email.strip().lower()
        if email and not EMAIL.match(email):
            raise ZammadError(422, f"Invalid email '{email}'")  # ◐ text
        if email and any(u["email"] == email and u["id"] != uid for u in self.users_.values()):
            raise ZammadError(422, f"Email address '{email}' is already used for other user.")
        return email

    def _user_fields(self, body: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
        fields = {k: body[k] for k in USER_COLUMNS if k in body and k != "id"}
        if ctx.admin and ("roles" in body or "role_ids" in body):  # agents: silently dropped
            roles = body.get("role_ids") or [_lookup(ROLES, "roles", r) for r in body["roles"]]
            fields["role_ids"] = list(roles)
        return fields

    async def _user_create(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        self._need_agent(ctx)
        body = await self._json(request)
        with self.lock:
            fields = self._user_fields(body, ctx)
            email = self._check_email(str(fields.get("email") or ""), None)
            idents = ("firstname", "lastname", "phone", "mobile", "email", "login")
            if not any(fields.get(k) for k in idents):
                raise ZammadError(
                    422,
                    "At least one identifier (firstname, lastname, phone, mobile or email) "
                    "for user is required.",
                )  # ◐ text
            login = str(fields.pop("login", "") or email or "").lower() or None
            if login and any(u["login"] == login for u in self.users_.values()):
                login = f"{login}{self._seq['user'] + 1}"  # Zammad appends a number
            roles = [ROLES[r] for r in fields.pop("role_ids", [3])]
            uid = self.add_user(login=login, email=email, roles=roles)
            user = self.users_[uid]
            user.update({k: v for k, v in fields.items() if k != "email"})
            user.update(created_by_id=ctx.user["id"], updated_by_id=ctx.user["id"])
            return _ok(self._user_json(user), 201)

    async def _user_update(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        body = await self._json(request)
        with self.lock:
            user = self._user(int(request.match_info["id"]))
            if not ctx.agent and user["id"] != ctx.user["id"]:
                raise ZammadError(403, "Not authorized")
            fields = self._user_fields(body, ctx)
            if "email" in fields:
                fields["email"] = self._check_email(str(fields["email"] or ""), user["id"])
            user.update(fields, updated_at=self._now(), updated_by_id=ctx.user["id"])
            return _ok(self._user_json(user))

    # -- tickets ----------------------------------------------------------------
    def _customer(self, params: dict[str, Any], customer: Any, ctx: Ctx) -> None:
        """customer_id: number, `guess:<email>`, or a `customer` object (find or create)."""
        guess = params.get("customer_id")
        if isinstance(guess, str) and guess.startswith("guess:"):
            email = guess[len("guess:") :]
            if not EMAIL.match(email):
                raise ZammadError(422, f"Invalid email '{email}' of customer", human=False)
            found = self._user_by(email) if "@" in email else None
            params["customer_id"] = found["id"] if found else self.add_user(email=email)
        elif not params.get("customer_id") and isinstance(customer, dict):
            found = None
            for key in ("id", "email", "login"):
                found = found or (self._user_by(str(customer[key])) if customer.get(key) else None)
            if found is None:
                fields = self._user_fields(customer, ctx)
                email = self._check_email(str(fields.pop("email", "") or ""), None)
                found = self.users_[self.add_user(email=email, login=fields.pop("login", None))]
                found.update(fields)
            params["customer_id"] = found["id"]

    def _ticket_params(self, body: dict[str, Any], ctx: Ctx, create: bool) -> dict[str, Any]:
        """association_name_to_id_convert + param_cleanup: names to ids, unknown keys dropped."""
        params = dict(body)
        for name, table in (("state", STATES), ("priority", PRIORITIES), ("group", self.groups)):
            if isinstance(params.get(name), str):
                params[f"{name}_id"] = _lookup(table, name, params.pop(name))
        for name in ("owner", "customer"):
            if isinstance(params.get(name), str):
                user = self._user_by(params.pop(name))
                if user is None:
                    raise ZammadError(
                        422, f"No lookup value found for '{name}': {_inspect(body[name])}"
                    )
                params[f"{name}_id"] = user["id"]
        customer = params.pop("customer", None)
        if not ctx.agent:
            for key in ("owner_id", "customer_id", "organization_id"):
                params.pop(key, None)
            if create:
                params["customer_id"] = ctx.user["id"]
        self._customer(params, customer, ctx)
        refs: dict[str, Mapping[int, Any]] = {
            "customer_id": self.users_, "owner_id": self.users_, "group_id": self.groups,
            "state_id": STATES, "priority_id": PRIORITIES,
        }  # fmt: skip
        keep = {"title", "note", "pending_time", *refs, *self.ticket_attributes}
        clean = {k: v for k, v in params.items() if k in keep}
        for key, known in refs.items():
            if clean.get(key) not in (None, "") and clean[key] not in known:
                raise ZammadError(422, f"Invalid value for param '{key}': {_inspect(clean[key])}")
        return clean

    async def _ticket_create(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        body = await self._json(request)
        with self.lock:
            users_before = self._seq["user"]
            try:
                art = body.get("article")
                fields, files = (
                    self._prepare_article(art, ctx) if isinstance(art, dict) else ({}, [])
                )
                clean = self._ticket_params(body, ctx, create=True)
                for key in ("title", "group_id", "customer_id"):
                    if not clean.get(key):
                        raise ZammadError(422, f"Attribute '{key}' required!")
            except ZammadError:  # one transaction: a customer made by `guess:` is rolled back
                for uid in [u for u in self.users_ if u > users_before]:
                    del self.users_[uid]
                raise
            tid, now = self._next("ticket"), self._now()
            ticket: dict[str, Any] = {c: None for c in TICKET_COLUMNS}
            ticket.update({a: None for a in self.ticket_attributes})
            ticket.update(state_id=1, priority_id=2, owner_id=1, pending_time=None, note=None)
            ticket.update(clean, id=tid, number=f"31{1000 + tid}", created_at=now)
            ticket.update(created_by_id=ctx.user["id"], updated_by_id=ctx.user["id"])
            ticket.update(updated_at=now, preferences={}, _born=self.clock())
            self.tickets_[tid] = ticket
            if fields:
                article = self._store_article(ticket, fields, ctx.user["id"], files)
                ticket["create_article_type_id"] = article["type_id"]
                ticket["create_article_sender_id"] = article["sender_id"]
                self._fire(tid, article["id"], created=True)
            return _ok(self._ticket_json(ticket, self._expand(request)), 201)

    @staticmethod
    def _expand(request: web.Request) -> bool:
        return request.query.get("expand", "") in ("true", "1")

    async def _ticket_show(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        with self.lock:
            ticket = self._ticket(int(request.match_info["id"]), ctx)
            return _ok(self._ticket_json(ticket, self._expand(request)))

    async def _ticket_update(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        body = await self._json(request)
        with self.lock:
            ticket = self._ticket(int(request.match_info["id"]), ctx)
            clean = self._ticket_params(body, ctx, create=False)
            art = body.get("article")
            fields, files = self._prepare_article(art, ctx) if isinstance(art, dict) else ({}, [])
            ticket.update(clean, updated_at=self._now(), updated_by_id=ctx.user["id"])
            if fields:
                article = self._store_article(ticket, fields, ctx.user["id"], files)
                self._fire(ticket["id"], article["id"], created=False)
            return _ok(self._ticket_json(ticket, self._expand(request)))

    # -- articles -----------------------------------------------------------------
    async def _article_create(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        body = await self._json(request)
        with self.lock:
            ticket = self._ticket(int(body.get("ticket_id") or 0), ctx)
            fields, files = self._prepare_article(body, ctx)
            article = self._store_article(ticket, fields, ctx.user["id"], files)
            self._fire(ticket["id"], article["id"], created=False)
            return _ok(self._article_json(article), 201)

    async def _article_show(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        with self.lock:
            aid = int(request.match_info["id"])
            if aid not in self.articles_:
                raise _not_found("Ticket::Article", aid)
            article = self.articles_[aid]
            self._ticket(article["ticket_id"], ctx)
            if article["internal"] and not ctx.agent:
                raise ZammadError(403, "Not authorized")
            return _ok(self._article_json(article))

    async def _by_ticket(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        with self.lock:
            tid = self._ticket(int(request.match_info["id"]), ctx)["id"]
            return _ok(
                [
                    self._article_json(a)
                    for a in self.articles_.values()
                    if a["ticket_id"] == tid and (ctx.agent or not a["internal"])
                ]
            )

    async def _attachment(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        with self.lock:
            self._ticket(int(request.match_info["t"]), ctx)
            article = self.articles_.get(int(request.match_info["a"]))
            if article is None:
                raise _not_found("Ticket::Article", request.match_info["a"])
            fid = int(request.match_info["id"])
            if fid not in article["_files"]:
                raise ZammadError(403, "The file does not belong to the specified article.")
            name, ctype, data = self.files[fid]
        disposition = f'attachment; filename="{name}"'
        return web.Response(
            body=data, content_type=ctype, headers={"Content-Disposition": disposition}
        )

    async def _attributes(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        if not ctx.admin:  # admin.object
            raise ZammadError(403, "Not authorized")
        return _ok(
            [
                {
                    "id": i + 100,
                    "name": name,
                    "object": "Ticket",
                    "display": name,
                    "active": True,
                    "editable": True,
                    "data_type": "input",
                    "to_migrate": False,
                    "data_option": {"type": "text", "maxlength": 200, "null": True},
                }
                for i, name in enumerate(self.ticket_attributes)
            ]
        )

    # -- search -------------------------------------------------------------------
    async def _ticket_search(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        params: dict[str, Any] = nested_params(dict(request.query))
        if request.method == "POST":
            params |= await self._json(request)
        limit = int(params.get("per_page") or params.get("limit") or 50)
        limit = max(1, min(limit, 200))  # paginate_with(max: 200, default: 50)
        page = max(1, int(params.get("page") or 1))
        with self.lock:
            found = [
                t for t in self.tickets_.values() if ctx.agent or t["customer_id"] == ctx.user["id"]
            ]
            if params.get("condition"):
                found = self._select(found, params["condition"], ctx)
            if params.get("query"):
                found = self._indexed(found, str(params["query"]))
            sort_by = str(params.get("sort_by") or "updated_at")
            if sort_by not in TICKET_COLUMNS + self.ticket_attributes:
                sort_by = "updated_at"
            desc = str(params.get("order_by") or "desc").lower() != "asc"
            found.sort(key=lambda t: (_text(t.get(sort_by) or ""), t["id"]), reverse=desc)
            found = found[(page - 1) * limit : page * limit]
            if params.get("expand") in (True, "true"):
                return _ok([self._ticket_json(t, True) for t in found])
            assets = {"Ticket": {str(t["id"]): self._ticket_json(t) for t in found}}
            return _ok({"tickets": [t["id"] for t in found], "tickets_count": len(found),
                        "assets": assets})  # fmt: skip

    # -- merge --------------------------------------------------------------------
    async def _merge(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        """PUT /ticket_merge/{source id}/{target NUMBER}: failures are 200 result=failed."""
        with self.lock:
            number = request.match_info["number"]
            target = next((t for t in self.tickets_.values() if t["number"] == number), None)
            if target is None:
                return _ok({"result": "failed",
                            "message": "The target ticket number could not be found."})  # fmt: skip
            self._need_agent(ctx)
            source = self.tickets_.get(int(request.match_info["src"]))
            if source is None:
                return _ok({"result": "failed", "message": "The source ticket could not be found."})
            if source is target:
                raise ZammadError(422, "A ticket cannot be merged into itself.")  # ◐ text
            if target["state_id"] == 5:
                raise ZammadError(422, "It is not possible to merge into an already merged ticket.")
            for article in self.articles_.values():
                if article["ticket_id"] == source["id"]:
                    article["ticket_id"] = target["id"]
            note = {"type": "note", "sender": "System", "body": "merged", "internal": False}
            self._store_article(source, note, ctx.user["id"], [])
            source.update(state_id=5, updated_at=self._now())
            return _ok({"result": "success", "target_ticket": self._ticket_json(target),
                        "source_ticket": self._ticket_json(source)})  # fmt: skip
