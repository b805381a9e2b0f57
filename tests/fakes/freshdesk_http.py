"""FakeFreshdesk's /api/v2 routes: read the request, apply freshdesk_ops under the lock, answer."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.freshdesk_model import CONV_NOTE, CONV_REPLY, FdError, check_contact, invalid, iso
from tests.fakes.freshdesk_model import mismatch as _mismatch
from tests.fakes.freshdesk_ops import (
    API,
    MONTH,
    clash,
    converse,
    create_ticket,
    json_answer,
    mails_of,
    merge_contacts,
    merge_tickets,
    new_contact,
    only,
    paged,
    read_body,
    search,
    shown,
    update_ticket,
)

if TYPE_CHECKING:
    from tests.fakes.freshdesk import FakeFreshdesk

Row = dict[str, Any]
Route = Callable[[web.Request], Awaitable[web.StreamResponse]]
LIST_KEYS = {"requester_id", "email", "company_id", "updated_since", "filter", "order_by"}
LIST_KEYS |= {"order_type", "include", "page", "per_page"}
CONTACT_LIST_KEYS = {"email", "phone", "mobile", "company_id", "state", "updated_since"}
CONTACT_LIST_KEYS |= {"page", "per_page"}


def add_routes(fake: FakeFreshdesk, app: web.Application) -> None:
    """Register every route of backends.md §6.9 (+ agents/me, attachment downloads)."""

    def includes(request: web.Request, allowed: set[str]) -> list[str]:
        wanted = [i for i in request.query.get("include", "").split(",") if i]
        bad = [i for i in wanted if i not in allowed]
        if bad:
            listed = ",".join(sorted(allowed))
            raise invalid(
                ("include", f"It should be one of these values: '{listed}'", "invalid_value")
            )
        return wanted

    def ticket_id(request: web.Request) -> int:
        tid = int(request.match_info["id"])
        if tid not in fake._tickets:
            raise FdError(404)
        return tid

    def user(body: Row, *, agents_only: bool) -> int:
        uid = body.get("user_id", fake.api_agent)
        if not isinstance(uid, int) or isinstance(uid, bool):
            raise invalid(_mismatch("user_id", uid, "Integer"))
        known = uid in fake._agents or (not agents_only and uid in fake._contacts)
        if not known:
            who = "agent" if agents_only else "contact or agent"
            message = f"There is no {who} matching the given user_id"  # ◐
            raise invalid(("user_id", message, "invalid_value"))
        return uid

    def text(body: Row) -> str:
        value = body.get("body")
        if value in (None, ""):
            raise invalid(("body", "It should be a/an String", "missing_field"))
        if not isinstance(value, str):
            raise invalid(_mismatch("body", value, "String"))
        for key in ("private", "incoming"):
            if key in body and not isinstance(body[key], bool):
                raise invalid(_mismatch(key, body[key], "Boolean"))
        return value

    async def create(request: web.Request) -> web.Response:
        body, files = await read_body(fake, request)
        with fake.lock:
            ticket = create_ticket(fake, body, files)
            location = {"Location": f"{API}/tickets/{ticket['id']}"}  # ◐
            return json_answer(201, copy.deepcopy(ticket), location)

    async def show(request: web.Request) -> web.Response:
        with fake.lock:
            tid = ticket_id(request)
            wanted = includes(request, {"conversations", "requester", "company", "stats"})
            return json_answer(200, shown(fake, fake._tickets[tid], wanted))

    async def update(request: web.Request) -> web.Response:
        body, files = await read_body(fake, request)
        with fake.lock:
            ticket = update_ticket(fake, ticket_id(request), body, files)
            return json_answer(200, copy.deepcopy(ticket))

    async def listing(request: web.Request) -> web.Response:
        """The synchronous DB listing (§6.5 lookup): no index lag."""
        q = request.query
        only(q, LIST_KEYS)
        wanted = includes(request, {"requester", "stats", "description"})
        with fake.lock:
            rows = list(fake._tickets.values())
            if "requester_id" in q:
                if not q["requester_id"].isdigit():
                    raise invalid(_mismatch("requester_id", q["requester_id"], "Integer"))
                rows = [t for t in rows if t["requester_id"] == int(q["requester_id"])]
            if "email" in q:
                who = [
                    c["id"] for c in fake._contacts.values() if q["email"].lower() in mails_of(c)
                ]
                if not who:
                    message = "There is no contact matching the given email"  # ◐
                    raise invalid(("email", message, "invalid_value"))
                rows = [t for t in rows if t["requester_id"] in who]
            if "company_id" in q:
                rows = [t for t in rows if str(t["company_id"]) == q["company_id"]]
            if "updated_since" in q:
                rows = [t for t in rows if t["updated_at"] >= q["updated_since"]]
            else:  # by default only tickets created in the past 30 days ◐
                rows = [t for t in rows if fake._created[t["id"]] >= fake.clock() - MONTH]
            rows = _filtered(rows, q.get("filter"))
            order_by, order_type = q.get("order_by", "created_at"), q.get("order_type", "desc")
            if order_by not in ("created_at", "due_by", "updated_at", "status"):
                message = "It should be one of these values: 'created_at,due_by,updated_at,status'"
                raise invalid(("order_by", message, "invalid_value"))
            if order_type not in ("asc", "desc"):
                message = "It should be one of these values: 'asc,desc'"
                raise invalid(("order_type", message, "invalid_value"))
            rows.sort(key=lambda t: (t[order_by], t["id"]), reverse=order_type == "desc")
            out = [shown(fake, t, wanted) for t in rows]
            if "description" not in wanted:  # listings leave the description out
                for row in out:
                    del row["description"], row["description_text"]
            return paged(request, out)

    async def note(request: web.Request) -> web.Response:
        body, files = await read_body(fake, request)
        with fake.lock:
            tid = ticket_id(request)
            only(body, {"body", "private", "incoming", "user_id", "notify_emails"})
            content, uid = text(body), user(body, agents_only=False)
            private, incoming = body.get("private", True), body.get("incoming", False)
            extra = {"to_emails": list(body.get("notify_emails", []))}
            row = converse(
                fake,
                tid,
                CONV_NOTE,
                content,
                uid,
                private=private,
                incoming=incoming,
                files=files,
                extra=extra,
            )
            return json_answer(201, copy.deepcopy(row))

    async def reply(request: web.Request) -> web.Response:
        body, files = await read_body(fake, request)
        with fake.lock:
            tid = ticket_id(request)
            only(body, {"body", "user_id", "cc_emails", "bcc_emails", "from_email"})
            content, uid = text(body), user(body, agents_only=True)
            extra: Row = {k: body[k] for k in ("cc_emails", "bcc_emails") if k in body}
            extra["from_email"] = body.get("from_email", "support@helpline.test")
            row = converse(
                fake, tid, CONV_REPLY, content, uid, private=False, files=files, extra=extra
            )
            return json_answer(201, copy.deepcopy(row))

    async def conversations(request: web.Request) -> web.Response:
        with fake.lock:
            rows = copy.deepcopy(fake._conversations[ticket_id(request)])
        return paged(request, rows)

    async def merge(request: web.Request) -> web.Response:
        body, _ = await read_body(fake, request)
        with fake.lock:
            merge_tickets(fake, body)
        return json_answer(204, None)

    async def contact_create(request: web.Request) -> web.Response:
        body, _ = await read_body(fake, request)  # an avatar upload is accepted and dropped
        check_contact(body, creating=True)
        with fake.lock:
            return json_answer(201, copy.deepcopy(new_contact(fake, body)))

    async def contact_list(request: web.Request) -> web.Response:
        q = request.query
        only(q, CONTACT_LIST_KEYS)
        with fake.lock:
            rows = list(fake._contacts.values())
            for key in ("phone", "mobile", "company_id"):
                if key in q:
                    rows = [c for c in rows if str(c.get(key)) == q[key]]
            if "email" in q:
                rows = [c for c in rows if q["email"].lower() in mails_of(c)]
            if "updated_since" in q:
                rows = [c for c in rows if c["updated_at"] >= q["updated_since"]]
            return paged(request, copy.deepcopy(rows), default=50)

    def contact_id(request: web.Request) -> int:
        uid = int(request.match_info["id"])
        if uid not in fake._contacts:
            raise FdError(404)
        return uid

    async def contact_show(request: web.Request) -> web.Response:
        with fake.lock:
            return json_answer(200, copy.deepcopy(fake._contacts[contact_id(request)]))

    async def contact_update(request: web.Request) -> web.Response:
        body, _ = await read_body(fake, request)
        check_contact(body, creating=False)
        with fake.lock:
            uid = contact_id(request)
            clash(fake, body, exclude=uid)
            contact = fake._contacts[uid]
            contact |= body
            contact["updated_at"] = fake_now(fake)
            fake._reindex("contact", contact)
            return json_answer(200, copy.deepcopy(contact))

    async def contact_merge(request: web.Request) -> web.Response:
        body, _ = await read_body(fake, request)
        with fake.lock:
            merge_contacts(fake, body)
        return json_answer(204, None)

    async def search_tickets(request: web.Request) -> web.Response:
        with fake.lock:
            return search(fake, request, "ticket")

    async def search_contacts(request: web.Request) -> web.Response:
        with fake.lock:
            return search(fake, request, "contact")

    async def me(request: web.Request) -> web.Response:
        with fake.lock:
            return json_answer(200, copy.deepcopy(fake._agents[fake.api_agent]))

    async def agents(request: web.Request) -> web.Response:
        with fake.lock:
            return paged(request, copy.deepcopy(list(fake._agents.values())), default=50)

    async def download(request: web.Request) -> web.Response:
        """The attachment_url target (a pre-signed CDN URL in Freshdesk: no auth)."""
        with fake.lock:
            data = fake._files.get(int(request.match_info["id"]))
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="application/octet-stream")

    table: list[tuple[str, str, Route]] = [
        ("POST", "/tickets", create),
        ("GET", "/tickets", listing),
        ("PUT", "/tickets/merge", merge),
        ("GET", r"/tickets/{id:\d+}", show),
        ("PUT", r"/tickets/{id:\d+}", update),
        ("POST", r"/tickets/{id:\d+}/notes", note),
        ("POST", r"/tickets/{id:\d+}/reply", reply),
        ("GET", r"/tickets/{id:\d+}/conversations", conversations),
        ("GET", "/search/tickets", search_tickets),
        ("GET", "/search/contacts", search_contacts),
        ("POST", "/contacts", contact_create),
        ("GET", "/contacts", contact_list),
        ("POST", "/contacts/merge", contact_merge),
        ("GET", r"/contacts/{id:\d+}", contact_show),
        ("PUT", r"/contacts/{id:\d+}", contact_update),
        ("GET", "/agents/me", me),
        ("GET", "/agents", agents),
    ]
    for method, path, handler in table:
        app.router.add_route(method, API + path, handler)
    app.router.add_get(r"/__fake__/attachments/{id:\d+}/{name}", download)


def _filtered(rows: list[Row], name: str | None) -> list[Row]:
    """Named views: new_and_my_open, watching, spam, deleted (this fake has no spam)."""
    if name is None:
        return rows
    if name == "new_and_my_open":
        return [t for t in rows if t["status"] == 2]
    if name in ("watching", "spam", "deleted"):
        return []
    message = "It should be one of these values: 'new_and_my_open,watching,spam,deleted'"
    raise invalid(("filter", message, "invalid_value"))


def fake_now(fake: FakeFreshdesk) -> str:
    return iso(fake.clock())
