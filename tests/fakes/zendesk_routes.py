"""The /api/v2 routes of the fake Zendesk (reference §5.2-5.6); state lives in zendesk.py.

Every handler takes the fake's lock around what it reads and writes; the gate middleware in
zendesk.py has already authenticated the caller (`actor_of(request)`) and counted the request.
Paths answer with or without the `.json` suffix, as Zendesk's do.
"""

from __future__ import annotations

import asyncio
import base64
import copy
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from tests.fakes.zendesk import (
    PRIORITIES,
    STATUSES,
    TYPES,
    USER_ID,
    IdempotentEntry,
    Json,
    ZendeskError,
    invalid,
    not_found,
    public,
)
from tests.fakes.zendesk_hooks import iso

if TYPE_CHECKING:
    from tests.fakes.zendesk import FakeZendesk

J = "{ext:(?:\\.json)?}"  # the optional .json suffix
TICKET_FIELDS = ("subject", "status", "priority", "type", "assignee_id", "external_id")


def add_routes(fake: FakeZendesk, app: web.Application) -> None:
    r = Routes(fake)
    add = app.router
    add.add_post(f"/api/v2/tickets{J}", r.create_ticket)
    add.add_get(f"/api/v2/tickets{J}", r.list_tickets)
    add.add_get(f"/api/v2/tickets/{{id:\\d+}}{J}", r.show_ticket)
    add.add_put(f"/api/v2/tickets/{{id:\\d+}}{J}", r.update_ticket)
    add.add_get(f"/api/v2/tickets/{{id:\\d+}}/comments{J}", r.list_comments)
    add.add_get(f"/api/v2/tickets/{{id:\\d+}}/audits{J}", r.list_audits)
    add.add_post(f"/api/v2/tickets/{{id:\\d+}}/merge{J}", r.merge_tickets)
    add.add_get(f"/api/v2/job_statuses/{{id}}{J}", r.job_status)
    add.add_post(f"/api/v2/uploads{J}", r.upload)
    add.add_get("/attachments/token/{name}/", r.download)
    from tests.fakes.zendesk_users import add_user_routes  # it imports this module's helpers

    add_user_routes(fake, app)


async def read(request: web.Request, root: str) -> tuple[Json, bytes]:
    """The `root` object of a JSON body; a malformed body is a text/plain 400 (§5.8)."""
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ZendeskError(400, "Bad Request: the body is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get(root), dict):
        raise ZendeskError(400, f"Bad Request: param is missing or empty: {root}")
    return data[root], raw


def actor_of(request: web.Request) -> Any:
    """The authenticated user's id (None only for an anonymous `me`)."""
    return request[USER_ID]


def json(body: Json, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def number(request: web.Request, name: str, default: int) -> int:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ZendeskError(400, f"Bad Request: {name} must be an integer") from None


def paginate(request: web.Request, items: list[Json], key: str) -> Json:
    """Cursor (`page[size]`, `page[after]`) or offset (`page`, `per_page`) pagination (§5.5)."""
    if any(k.startswith("page[") for k in request.query):
        size = number(request, "page[size]", 100)
        if not 1 <= size <= 100:
            raise ZendeskError(
                400,
                {"error": "InvalidPaginationParameter", "description": "page[size] is over 100"},
            )
        after = request.query.get("page[after]")
        try:
            start = int(base64.urlsafe_b64decode(after).decode()) if after else 0
        except ValueError:
            raise ZendeskError(400, {"error": "InvalidPaginationParameter"}) from None
        chunk = items[start : start + size]
        more = start + size < len(items)
        cursor = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        following = str(request.url.update_query({"page[after]": cursor})) if more else None
        return {
            key: chunk,
            "meta": {"has_more": more, "after_cursor": cursor if chunk else None},
            "links": {"next": following, "prev": None},
        }
    page = max(number(request, "page", 1), 1)
    per_page = min(max(number(request, "per_page", 100), 1), 100)
    start = (page - 1) * per_page
    more = start + per_page < len(items)
    return {
        key: items[start : start + per_page],
        "next_page": str(request.url.update_query({"page": page + 1})) if more else None,
        "previous_page": str(request.url.update_query({"page": page - 1})) if page > 1 else None,
        "count": len(items),
    }


def live_user(fake: FakeZendesk, user_id: Any, field: str = "user_id") -> Json:
    """An active user by id, or the 422 Zendesk gives for an invalid id in `field` (◐)."""
    user = fake._users.get(user_id) if isinstance(user_id, int) else None
    if user is None or not user["active"]:
        raise invalid(field, f"{field}: is invalid", "InvalidValue")
    return user


class Routes:
    """The handlers; each one is a documented Zendesk call."""

    def __init__(self, fake: FakeZendesk) -> None:
        self.fake = fake

    def _ticket(self, request: web.Request) -> Json:
        ticket = self.fake._tickets.get(int(request.match_info["id"]))
        if ticket is None:
            raise not_found()
        return ticket

    # -- tickets ----------------------------------------------------------------
    async def create_ticket(self, request: web.Request) -> web.Response:
        """Create, honouring Idempotency-Key: replay on the same body, 400 on another (§5.3)."""
        data, _ = await read(request, "ticket")
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return self._create(request, data)
        fingerprint = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
        fake, now = self.fake, self.fake.clock()
        with fake.lock:
            entry = fake._idempotency.get(key)
            if entry is not None and entry.expires <= now:
                entry = None  # expired: the key protects nothing any more
            if entry is not None and entry.status == 0:
                # Concurrent same-key create while the first is in flight: Zendesk's answer
                # is unknown (◐); the fake says 409 so a client retries later.
                raise ZendeskError(
                    409,
                    {"error": "IdempotentRequestInProgress", "description": "Request in progress"},
                )
            if entry is not None and entry.fingerprint != fingerprint:
                raise ZendeskError(
                    400,
                    {
                        "error": "IdempotentRequestError",
                        "description": "Request parameters don't match the given idempotency key",
                    },
                )
            if entry is not None:
                headers = {**(entry.headers or {}), "x-idempotency-lookup": "hit"}
                return web.Response(
                    status=entry.status,
                    body=entry.body,
                    content_type="application/json",
                    headers=headers,
                )
            entry = IdempotentEntry(fingerprint, now + fake.idempotency_ttl)
            fake._idempotency[key] = entry
        try:
            if fake.create_delay:
                await asyncio.sleep(fake.create_delay)
            response = self._create(request, data)
        except ZendeskError:  # only a success is remembered (◐)
            with fake.lock:
                fake._idempotency.pop(key, None)
            raise
        with fake.lock:
            assert isinstance(response.body, bytes)
            entry.status, entry.body = response.status, response.body
            entry.headers = {"Location": response.headers["Location"]}
        response.headers["x-idempotency-lookup"] = "miss"
        return response

    def _create(self, request: web.Request, t: Json) -> web.Response:
        fake = self.fake
        actor = actor_of(request)
        given = t.get("comment")
        comment: Json = given if isinstance(given, dict) else {}
        body = comment.get("body") or t.get("description")
        if not body and not comment.get("html_body"):
            raise invalid("description", "Description: cannot be blank", "BlankValue")
        _check_values(t)
        with fake.lock:
            if "requester_id" in t:
                requester = live_user(self.fake, t["requester_id"], "requester_id")
            elif isinstance(t.get("requester"), dict):
                requester = self._requester(t["requester"])
            else:
                requester = fake._users[actor]
            submitter = live_user(self.fake, t.get("submitter_id", requester["id"]), "submitter_id")
            author = live_user(self.fake, comment.get("author_id", submitter["id"]), "author_id")
            if t.get("assignee_id") is not None:
                live_user(self.fake, t["assignee_id"], "assignee_id")
            tid = fake.next_ticket_id()
            stamp = fake.now()
            status = t.get("status") or ("open" if t.get("assignee_id") else "new")
            ticket: Json = {
                "id": tid,
                "url": f"{fake.url}/api/v2/tickets/{tid}.json",
                "external_id": t.get("external_id"),
                "subject": t.get("subject"),
                "raw_subject": t.get("subject"),
                "description": "",
                "status": status,
                "priority": t.get("priority"),
                "type": t.get("type"),
                "requester_id": requester["id"],
                "submitter_id": submitter["id"],
                "assignee_id": t.get("assignee_id"),
                "organization_id": None,
                "group_id": None,
                "tags": sorted(set(t.get("tags") or [])),
                "custom_fields": t.get("custom_fields") or [],
                "is_public": False,
                "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}},
                "created_at": stamp,
                "updated_at": stamp,
            }
            fake._tickets[tid] = ticket
            spec = {
                "author_id": author["id"],
                "body": body,
                "html_body": comment.get("html_body"),
                "public": comment.get("public", True),
                "attachments": fake.take_uploads(comment.get("uploads") or []),
            }
            created = [(f, None, ticket[f]) for f in TICKET_FIELDS if ticket[f] is not None]
            stored, audit = fake.add_audit(
                ticket,
                actor_id=actor,
                comment=spec,
                changes=created,
                metadata=t.get("metadata"),
                change_type="Create",
            )
            assert stored is not None
            ticket["description"] = stored["plain_body"]
            ticket["updated_at"] = stamp
            answer = {"ticket": copy.deepcopy(ticket), "audit": audit}
        # No webhook here: a comment_added trigger fires on updates, not on the create.
        return json(answer, 201, {"Location": ticket["url"]})

    def _requester(self, spec: Json) -> Json:
        """`requester` finds-or-creates by email; without an email, a new user each time."""
        email = spec.get("email")
        found = self.fake.find_user(email=email) if email else None
        if found is not None:
            return found
        name = spec.get("name") or (email.split("@")[0] if email else "")
        if not name:
            raise invalid("requester", "Requester: Name: is too short (minimum one character)")
        made = self.fake.add_user(name, email)
        return self.fake._users[made["id"]]

    async def list_tickets(self, request: web.Request) -> web.Response:
        """`?external_id=` filters; external ids are not unique, so several can come back."""
        wanted = request.query.get("external_id")
        with self.fake.lock:
            items = [
                copy.deepcopy(t)
                for t in self.fake._tickets.values()
                if wanted is None or t["external_id"] == wanted
            ]
        return json(paginate(request, items, "tickets"))

    async def show_ticket(self, request: web.Request) -> web.Response:
        with self.fake.lock:
            return json({"ticket": copy.deepcopy(self._ticket(request))})

    async def update_ticket(self, request: web.Request) -> web.Response:
        """Fields and/or one comment; `metadata` lands in `audit.metadata.custom` (§5.2)."""
        fake = self.fake
        t, _ = await read(request, "ticket")
        actor = actor_of(request)
        with fake.lock:
            ticket = self._ticket(request)
            fake.check_update_limit(actor, ticket["id"])
            if ticket["status"] == "closed":
                raise invalid("status", "Status: closed prevents ticket update", "InvalidValue")
            if t.get("safe_update") and t.get("updated_stamp") != ticket["updated_at"]:
                raise ZendeskError(
                    409,
                    {
                        "error": "UpdateConflict",
                        "description": "Safe Update prevented the update due to outdated "
                        "ticket data. Please fetch the latest ticket data and try again.",
                    },
                )
            _check_values(t)
            spec = None
            comment = t.get("comment")
            if isinstance(comment, dict):
                if not (comment.get("body") or comment.get("html_body") or comment.get("uploads")):
                    raise invalid("comment", "Comment: cannot be blank", "BlankValue")
                author = live_user(self.fake, comment.get("author_id", actor), "author_id")
                spec = {
                    "author_id": author["id"],
                    "body": comment.get("body") or "",
                    "html_body": comment.get("html_body"),
                    "public": comment.get("public", True),
                    "attachments": fake.take_uploads(comment.get("uploads") or []),
                }
            if "requester_id" in t:
                live_user(self.fake, t["requester_id"], "requester_id")
            changes = []
            for name in (*TICKET_FIELDS, "requester_id", "custom_fields"):
                if name in t and t[name] != ticket[name]:
                    changes.append((name, ticket[name], t[name]))
                    ticket[name] = t[name]
            if ticket["assignee_id"] and ticket["status"] == "new":
                changes.append(("status", "new", "open"))
                ticket["status"] = "open"
            tags = set(t["tags"]) if "tags" in t else set(ticket["tags"])
            tags = (tags | set(t.get("additional_tags") or [])) - set(t.get("remove_tags") or [])
            if sorted(tags) != ticket["tags"]:
                changes.append(("tags", ticket["tags"], sorted(tags)))
                ticket["tags"] = sorted(tags)
            stored, audit = fake.add_audit(
                ticket, actor_id=actor, comment=spec, changes=changes, metadata=t.get("metadata")
            )
            snapshot = copy.deepcopy(ticket)
            author_user = public(fake._users[stored["author_id"]]) if stored else None
        if stored is not None and author_user is not None:
            fake.hooks.on_comment(snapshot, stored, author_user, actor_id=actor, via_api=True)
        return json({"ticket": snapshot, "audit": audit})

    async def list_comments(self, request: web.Request) -> web.Response:
        with self.fake.lock:
            ticket = self._ticket(request)
            items = copy.deepcopy(self.fake._comments.get(ticket["id"], []))
        if request.query.get("sort_order") == "desc":
            items.reverse()
        return json(paginate(request, items, "comments"))

    async def list_audits(self, request: web.Request) -> web.Response:
        with self.fake.lock:
            ticket = self._ticket(request)
            items = copy.deepcopy(self.fake._audits.get(ticket["id"], []))
        return json(paginate(request, items, "audits"))

    async def merge_tickets(self, request: web.Request) -> web.Response:
        """Merge sources into the target as a job; sources end closed (§5.2)."""
        fake = self.fake
        raw = await request.read()
        try:
            data = orjson.loads(raw)
            ids = [int(i) for i in data["ids"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ZendeskError(400, "Bad Request: ids are required") from None
        actor = actor_of(request)
        with fake.lock:
            target = self._ticket(request)
            sources = [fake._tickets.get(i) for i in ids]
            if target["id"] in ids or any(s is None or s["status"] == "closed" for s in sources):
                raise invalid("ids", "Ids: cannot be merged", "InvalidValue")
            for source in sources:
                assert source is not None
                note = data.get("source_comment") or f"Closed and merged into #{target['id']}"
                closing = [("status", source["status"], "closed")]
                source["status"] = "closed"
                spec = {
                    "author_id": actor,
                    "body": note,
                    "public": bool(data.get("source_comment_is_public", False)),
                }
                fake.add_audit(source, actor_id=actor, comment=spec, changes=closing)
            note = data.get("target_comment") or f"Requests {ids} were merged into this request"
            spec = {
                "author_id": actor,
                "body": note,
                "public": bool(data.get("target_comment_is_public", False)),
            }
            fake.add_audit(target, actor_id=actor, comment=spec)
            job_id = f"job{fake.next_misc_id():08d}"
            job = {
                "id": job_id,
                "url": f"{fake.url}/api/v2/job_statuses/{job_id}.json",
                "job_type": "merge",
                "total": len(ids),
                "progress": len(ids),
                "status": "completed",
                "message": f"Completed at {fake.now()}",
                "results": [{"id": i, "status": "Merged", "success": True} for i in ids],
            }
            fake._jobs[job_id] = job
        queued = {**job, "status": "queued", "progress": None, "message": None, "results": None}
        return json({"job_status": queued})

    async def job_status(self, request: web.Request) -> web.Response:
        with self.fake.lock:
            job = self.fake._jobs.get(request.match_info["id"])
            if job is None:
                raise not_found()
            return json({"job_status": copy.deepcopy(job)})

    # -- uploads --------------------------------------------------------------------
    async def upload(self, request: web.Request) -> web.Response:
        """`POST /uploads?filename=` with the raw file; the token goes in comment.uploads."""
        filename = request.query.get("filename")
        if not filename:
            raise invalid("filename", "Filename: cannot be blank", "BlankValue")
        data = await request.read()
        kind = request.headers.get("Content-Type", "application/binary")
        token, attachment = self.fake.store_upload(filename, kind, data, request.query.get("token"))
        with self.fake.lock:
            expires, attachments = self.fake._uploads[token]
            body = {
                "upload": {
                    "token": token,
                    "expires_at": iso(expires),
                    "attachments": copy.deepcopy(attachments),
                    "attachment": attachment,
                }
            }
        return json(body, 201)

    async def download(self, request: web.Request) -> web.Response:
        found = self.fake.blob_by_path(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        attachment, data = found
        return web.Response(body=data, content_type=attachment["content_type"])


def _check_values(t: Json) -> None:
    """Status, priority and type take only Zendesk's values."""
    for name, allowed in (("status", STATUSES), ("priority", PRIORITIES), ("type", TYPES)):
        value = t.get(name)
        if value is not None and value not in allowed:
            raise invalid(name, f"{name.title()}: {value} is not valid", "InvalidValue")
