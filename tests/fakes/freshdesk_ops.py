"""The state changes behind FakeFreshdesk's routes: contacts, tickets, conversations, merges.

Functions take the fake and run under its lock; the answers are Freshdesk's (status, JSON
shape, wording as far as known, ◐ where backends.md §6 marks it uncertain).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from tests.fakes.freshdesk_model import (
    CONV_NOTE,
    CONV_REPLY,
    MAX_ATTACHMENT_BYTES,
    PRIORITIES,
    SOURCES,
    STATUSES,
    FdError,
    check_ticket,
    from_form,
    invalid,
    iso,
    parse_query,
    text_of,
)

if TYPE_CHECKING:
    from tests.fakes.freshdesk import FakeFreshdesk

Row = dict[str, Any]
Files = Iterable[tuple[str, str, bytes]]
API = "/api/v2"
MONTH = 30 * 86400.0
# Fields the search index knows (cf_* come from the configured ticket fields).
TICKET_SEARCH = {"status", "priority", "type", "group_id", "agent_id", "tag", "created_at"}
TICKET_SEARCH |= {"updated_at", "due_by", "fr_due_by"}
CONTACT_SEARCH = {"email", "phone", "mobile", "company_id", "tag", "created_at", "updated_at"}
UNEXPECTED = "Unexpected/invalid field in request"
NOT_FOUND = FdError(404)


def json_answer(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer; `None` gives an empty body (204, and 404 as Freshdesk sends it ◐)."""
    if body is None:
        return web.Response(status=status, headers=headers)
    data = orjson.dumps(body)
    return web.Response(status=status, body=data, content_type="application/json", headers=headers)


async def read_body(
    fake: FakeFreshdesk, request: web.Request
) -> tuple[Row, list[tuple[str, str, bytes]]]:
    """JSON, or multipart/form-data where attachments ride along (§6.1)."""
    raw = await request.read()
    if request.content_type == "multipart/form-data":
        body, files = from_form(request.headers["Content-Type"], raw, fake.ticket_fields)
        if sum(len(data) for _, _, data in files) > MAX_ATTACHMENT_BYTES:
            message = "The cumulative size of all attachments should not exceed 20 MB"  # ◐
            raise invalid(("attachments", message, "invalid_value"))
        return body, files
    if request.content_type != "application/json":
        message = "Content-Type header should have application/json"  # ◐
        raise FdError(415, {"code": "invalid_content_type", "message": message})
    try:
        parsed: Any = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        message = "Request body has invalid json format"
        raise FdError(400, {"code": "invalid_json", "message": message})
    return parsed, []


def only(query: Any, allowed: set[str]) -> None:
    unknown = [(k, UNEXPECTED, "invalid_field") for k in query if k not in allowed]
    if unknown:
        raise invalid(*unknown)


def number(query: Any, key: str, default: int, top: int) -> int:
    raw = query.get(key, str(default))
    if not raw.isdigit() or int(raw) < 1:
        raise invalid((key, "It should be a/an Positive Integer", "datatype_mismatch"))
    if int(raw) > top:
        message = f"It should be a Positive Integer less than or equal to {top}"
        raise invalid((key, message, "invalid_value"))
    return int(raw)


def paged(request: web.Request, rows: list[Row], default: int = 30) -> web.Response:
    """One page of a listing; a `Link: <…>; rel="next"` header when there is more ◐."""
    page = number(request.query, "page", 1, 10**6)
    per_page = number(request.query, "per_page", default, 100)
    chunk = rows[(page - 1) * per_page : page * per_page]
    headers = {}
    if len(rows) > page * per_page:
        following = request.url.update_query(page=str(page + 1))
        headers["Link"] = f'<{following}>; rel="next"'
    return json_answer(200, chunk, headers)


# -- contacts ------------------------------------------------------------------------------


def clash(fake: FakeFreshdesk, body: Row, exclude: int | None = None) -> None:
    """409 duplicate_value with the holder's id (§6.4 ◐) for a taken email / external id."""
    taken: dict[tuple[str, str], int] = {}
    for uid, contact in fake._contacts.items():
        for mail in [contact["email"], *contact["other_emails"]]:
            if mail and uid != exclude:
                taken[("email", mail.lower())] = uid
        if contact["unique_external_id"] and uid != exclude:
            taken[("unique_external_id", contact["unique_external_id"])] = uid
    for uid, agent in fake._agents.items():
        taken[("email", agent["contact"]["email"].lower())] = uid
    errors = []
    for key in ("email", "other_emails", "unique_external_id"):
        values = body.get(key) or []
        for value in values if isinstance(values, list) else [values]:
            wanted = ("unique_external_id", value) if key == "unique_external_id" else None
            holder = taken.get(wanted or ("email", str(value).lower()))
            if holder is not None:
                errors.append((key, "It should be a unique value", "duplicate_value", holder))
    if errors:
        items = [
            {"field": f, "additional_info": {"user_id": uid}, "message": m, "code": c}
            for f, m, c, uid in errors
        ]
        raise FdError(409, {"description": "Validation failed", "errors": items})


def mails_of(contact: Row) -> list[str]:
    """A contact's primary and other emails, lower-cased (emails match case-insensitively)."""
    return [m.lower() for m in [contact["email"], *contact["other_emails"]] if m]


def new_contact(fake: FakeFreshdesk, body: Row) -> Row:
    clash(fake, body)
    uid, now = fake._next("user"), iso(fake.clock())
    contact: Row = {"id": uid, "active": False, "address": None, "company_id": None}
    for key in ("name", "email", "phone", "mobile", "twitter_id", "unique_external_id"):
        contact[key] = body.get(key)
    contact |= {"other_emails": list(body.get("other_emails") or []), "tags": body.get("tags", [])}
    contact |= {"description": body.get("description"), "job_title": body.get("job_title")}
    contact |= {"language": body.get("language", "en"), "time_zone": body.get("time_zone")}
    contact |= {"custom_fields": dict(body.get("custom_fields") or {})}
    contact |= {"created_at": now, "updated_at": now}
    fake._contacts[uid] = contact
    fake._reindex("contact", contact)
    return contact


def requester_of(fake: FakeFreshdesk, body: Row) -> int:
    """The first identifier naming a known contact wins; otherwise a new contact (§6.3)."""
    if body.get("requester_id") is not None:
        if body["requester_id"] not in fake._contacts:
            message = "There is no contact matching the given requester_id"  # ◐
            raise invalid(("requester_id", message, "invalid_value"))
        return int(body["requester_id"])
    for key in ("email", "unique_external_id", "phone", "twitter_id", "facebook_id"):
        value = body.get(key)
        for uid, contact in fake._contacts.items():
            if not value:
                break
            if key == "email" and value.lower() in mails_of(contact):
                return uid
            if key != "email" and contact.get(key) == value:
                return uid
    if not body.get("email") and not body.get("name"):
        raise invalid(("name", "It should be a/an String", "missing_field"))  # phone only
    fields = {k: body.get(k) for k in ("email", "phone", "twitter_id", "unique_external_id")}
    name = body.get("name") or str(body["email"]).split("@")[0]
    return int(new_contact(fake, {"name": name, **fields})["id"])


# -- tickets ------------------------------------------------------------------------------


def create_ticket(fake: FakeFreshdesk, body: Row, files: Files) -> Row:
    check_ticket(
        body,
        creating=True,
        fields=fake.ticket_fields,
        required=fake.required_fields,
        statuses=fake.statuses,
    )
    requester = requester_of(fake, body)
    tid, now = fake._next("ticket"), fake.clock()
    custom = {name: None for name in fake.ticket_fields} | body.get("custom_fields", {})
    ticket: Row = {"id": tid, "subject": body.get("subject"), "requester_id": requester}
    ticket |= {"description": body.get("description", ""), "status": body.get("status", 2)}
    ticket["description_text"] = text_of(ticket["description"] or "")
    ticket |= {"priority": body.get("priority", 1), "source": body.get("source", 2)}  # ◐
    for key in ("type", "group_id", "responder_id", "company_id", "product_id"):
        ticket[key] = body.get(key)
    ticket |= {"email_config_id": None, "tags": body.get("tags", []), "custom_fields": custom}
    ticket |= {"cc_emails": body.get("cc_emails", []), "fwd_emails": [], "reply_cc_emails": []}
    ticket |= {"to_emails": None, "spam": False, "fr_escalated": False, "is_escalated": False}
    ticket |= {"due_by": iso(now + 3 * 86400), "fr_due_by": iso(now + 86400)}  # SLA stand-in
    ticket |= {"attachments": store(fake, files), "created_at": iso(now), "updated_at": iso(now)}
    fake._tickets[tid] = ticket
    fake._conversations[tid] = []
    fake._created[tid] = now
    fake._reindex("ticket", ticket)
    return ticket


def update_ticket(fake: FakeFreshdesk, tid: int, body: Row, files: Files) -> Row:
    check_ticket(
        body, creating=False, fields=fake.ticket_fields, required=(), statuses=fake.statuses
    )
    ticket = fake._tickets[tid]
    if any(body.get(k) for k in ("requester_id", "email", "phone", "unique_external_id")):
        ticket["requester_id"] = requester_of(fake, body)
    for key, value in body.items():
        if key == "custom_fields":
            ticket["custom_fields"] |= value
        elif key in ticket and key not in ("requester_id", "attachments"):
            ticket[key] = value
    ticket["description_text"] = text_of(ticket["description"] or "")
    ticket["attachments"] += store(fake, files)
    ticket["updated_at"] = iso(fake.clock())
    fake._reindex("ticket", ticket)
    return ticket


def store(fake: FakeFreshdesk, files: Files) -> list[Row]:
    rows = []
    for name, content_type, data in files:
        aid, now = fake._next("attachment"), iso(fake.clock())
        fake._files[aid] = data
        url = f"{fake.url}/__fake__/attachments/{aid}/{name}"
        rows.append({"id": aid, "name": name, "content_type": content_type, "size": len(data)})
        rows[-1] |= {"attachment_url": url, "created_at": now, "updated_at": now}
    return rows


def shown(fake: FakeFreshdesk, ticket: Row, includes: list[str]) -> Row:
    row = copy.deepcopy(ticket)
    if "requester" in includes:
        contact = fake._contacts.get(ticket["requester_id"]) or {}
        row["requester"] = {k: contact.get(k) for k in ("id", "name", "email", "mobile", "phone")}
    if "conversations" in includes:
        row["conversations"] = copy.deepcopy(fake._conversations[ticket["id"]][:10])
    if "stats" in includes:
        row["stats"] = {"agent_responded_at": None, "requester_responded_at": None}
    return row


def converse(
    fake: FakeFreshdesk,
    tid: int,
    source: int,
    body: str,
    user_id: int,
    *,
    private: bool,
    incoming: bool = False,
    files: Files = (),
    extra: Row | None = None,
) -> Row:
    """Add a reply or note; fire the automation webhook when its rule matches (§6.8)."""
    ticket, now = fake._tickets[tid], iso(fake.clock())
    requester = fake._contacts.get(ticket["requester_id"]) or {}
    row: Row = {"id": fake._next("conversation"), "body": body, "body_text": text_of(body)}
    row |= {"incoming": incoming, "private": private, "user_id": user_id, "source": source}
    row |= {"ticket_id": tid, "support_email": None, "from_email": None, "to_emails": []}
    row |= {"cc_emails": [], "bcc_emails": [], "created_at": now, "updated_at": now}
    if source == CONV_REPLY:
        row["to_emails"] = [requester.get("email")] if requester.get("email") else []
    row |= extra or {}
    row["attachments"] = store(fake, files)
    fake._conversations[tid].append(row)
    ticket["updated_at"] = now
    fake._reindex("ticket", ticket)
    hook = fake.hooks.hook
    by_agent = user_id in fake._agents
    if hook and by_agent and (source == CONV_REPLY or hook.on_notes):
        fake.hooks.fire(ticket, row["id"], placeholders(fake, ticket))
    return row


def placeholders(fake: FakeFreshdesk, ticket: Row) -> Row:
    """The `{{ticket.…}}` values a webhook template can use ◐ (names after Freshdesk's)."""
    contact = fake._contacts.get(ticket["requester_id"]) or {}
    values: Row = {"ticket.id": ticket["id"], "ticket.subject": ticket["subject"]}
    values["ticket.description"] = ticket["description"]
    values["ticket.status"] = STATUSES.get(ticket["status"], str(ticket["status"]))
    values["ticket.priority"] = PRIORITIES.get(ticket["priority"])
    values["ticket.source"] = SOURCES.get(ticket["source"])
    values["ticket.url"] = f"{fake.url}/a/tickets/{ticket['id']}"
    values["ticket.tags"] = ", ".join(ticket["tags"])
    for key in ("id", "name", "email", "phone", "mobile", "unique_external_id"):
        values[f"ticket.contact.{key}"] = contact.get(key)
        values[f"ticket.requester.{key}"] = contact.get(key)
    for name, value in ticket["custom_fields"].items():
        values[f"ticket.{name}"] = value
    for private in (False, True):
        notes = [c for c in fake._conversations[ticket["id"]] if c["private"] == private]
        if notes:  # rendered "Name : <body>" (seen in community receivers ◐)
            author = fake._user(notes[-1]["user_id"]) or {}
            latest = f"{author.get('name')} : {notes[-1]['body']}"
            values[f"ticket.latest_{'private' if private else 'public'}_comment"] = latest
    return values


def merge_tickets(fake: FakeFreshdesk, body: Row) -> None:
    only(
        body,
        {"primary_id", "ticket_ids", "note_in_primary", "note_in_secondary"}
        | {"convert_recepients_to_cc"},
    )
    primary, others = body.get("primary_id"), body.get("ticket_ids")
    if primary not in fake._tickets:
        raise invalid(("primary_id", "There is no ticket matching the given id", "invalid_value"))
    if not isinstance(others, list) or not others or any(t not in fake._tickets for t in others):
        raise invalid(("ticket_ids", "It should contain valid ticket ids", "invalid_value"))
    agent = fake.api_agent
    for tid in others:
        note = (body.get("note_in_secondary") or {}).get("body") or f"Merged into #{primary}"
        converse(fake, tid, CONV_NOTE, note, agent, private=True)
        fake._tickets[tid]["status"] = 5
        fake.ticket_merges[tid] = primary
        fake._reindex("ticket", fake._tickets[tid])
    listed = ", ".join(f"#{t}" for t in others)
    note = (body.get("note_in_primary") or {}).get("body") or f"Merged tickets: {listed}"
    converse(fake, primary, CONV_NOTE, note, agent, private=True)


def merge_contacts(fake: FakeFreshdesk, body: Row) -> None:
    only(body, {"primary_contact_id", "secondary_contact_ids", "contact"})
    primary, others = body.get("primary_contact_id"), body.get("secondary_contact_ids")
    if primary not in fake._contacts:
        message = "There is no contact matching the given id"
        raise invalid(("primary_contact_id", message, "invalid_value"))
    if not isinstance(others, list) or not others or any(c not in fake._contacts for c in others):
        message = "It should contain valid contact ids"
        raise invalid(("secondary_contact_ids", message, "invalid_value"))
    keep = fake._contacts[primary]
    for uid in others:
        gone = fake._contacts.pop(uid)
        fake._index.pop(("contact", uid), None)
        fake.contact_merges[uid] = primary
        for mail in [gone["email"], *gone["other_emails"]]:
            if mail and mail != keep["email"] and mail not in keep["other_emails"]:
                keep["other_emails"].append(mail)
        keep["unique_external_id"] = keep["unique_external_id"] or gone["unique_external_id"]
        for ticket in fake._tickets.values():
            if ticket["requester_id"] == uid:
                ticket["requester_id"] = primary
                fake._reindex("ticket", ticket)
    chosen = body.get("contact") or {}
    only(chosen, {"email", "phone", "mobile", "twitter_id", "other_emails", "company_ids"})
    keep |= {k: v for k, v in chosen.items() if k != "company_ids"}
    keep["updated_at"] = iso(fake.clock())
    fake._reindex("contact", keep)


def search(fake: FakeFreshdesk, request: web.Request, kind: str) -> web.Response:
    """`GET /search/{tickets,contacts}?query="…"`: 30 a page, 10 pages, index lag applies."""
    only(request.query, {"query", "page"})
    known = TICKET_SEARCH if kind == "ticket" else CONTACT_SEARCH
    custom = fake.ticket_fields if kind == "ticket" else {}

    def field(name: str) -> str | None:  # cf_x, or x for a custom field cf_x ◐
        return name if name in custom else f"cf_{name}" if f"cf_{name}" in custom else None

    def lookup(row: Row, name: str) -> Any:
        if (cf := field(name)) is not None:
            return row["custom_fields"].get(cf)
        return row.get({"agent_id": "responder_id", "tag": "tags"}.get(name, name))

    predicate = parse_query(
        request.query.get("query"), lambda n: n in known or field(n) is not None, lookup
    )
    page = number(request.query, "page", 1, 10)
    rows = [r for r in fake._searchable(kind) if predicate(r)]
    rows.sort(key=lambda r: r["id"], reverse=True)
    return json_answer(200, {"results": rows[(page - 1) * 30 : page * 30], "total": len(rows)})
