"""The HTTP side of FakeChatwoot: auth, params, and the Application API handlers.

Each handler takes the fake and the request, works under the fake's lock, and raises
`Answer` / `Invalid` for Chatwoot's error bodies (see `guard`). Facts: backends.md 7.1-7.6.
"""

from __future__ import annotations

import email
import email.policy
import re
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.chatwoot import (
    EVENTS,
    NOT_FOUND,
    SIGN_IN,
    STATUSES,
    Answer,
    Contact,
    ContactInbox,
    Conversation,
    FakeChatwoot,
    Invalid,
    Message,
    Webhook,
)
from tests.fakes.chatwoot_hooks import MESSAGE_TYPES

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Route = Callable[[FakeChatwoot, web.Request], Awaitable[web.StreamResponse]]
OWNER = web.RequestKey("owner", tuple)  # (owner type, id) of the access token


def guard(cw: FakeChatwoot, handler: Route, *, bot_ok: bool = False) -> Handler:
    """api_access_token auth, bot restrictions, the account, then the handler; `Answer`
    and `Invalid` raised inside become Chatwoot's error bodies."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        token = request.headers.get("api_access_token") or request.headers.get("api-access-token")
        if not token:
            return web.json_response(SIGN_IN, status=401)  # devise_token_auth's answer
        owner = cw.tokens.get(token)
        if owner is None:
            return web.json_response({"error": "Invalid Access Token"}, status=401)
        if owner[0] == "AgentBot" and not bot_ok:
            refusal = {"error": "Access to this endpoint is not authorized for bots"}
            return web.json_response(refusal, status=401)
        if request.match_info.get("account_id") != str(cw.account_id):
            return web.json_response(NOT_FOUND, status=404)
        request[OWNER] = owner
        try:
            return await handler(cw, request)
        except Invalid as err:
            body: dict[str, Any] = {
                "message": str(err),
                "attributes": list(dict.fromkeys(a for a, _ in err.errors)),
            }
            return web.json_response(body, status=422)
        except Answer as err:
            if isinstance(err.body, str):
                return web.json_response(
                    {"status": err.status, "error": err.body}, status=err.status
                )
            return web.json_response(err.body, status=err.status)

    return wrapped


async def read_params(request: web.Request) -> dict[str, Any]:
    """Rails params: the query merged with a JSON, form or multipart body; files under
    `attachments[]` become (filename, content_type, bytes). Parsed from the bytes the
    harness already read (the stream itself is spent)."""
    out: dict[str, Any] = dict(request.query)
    raw = await request.read()
    if request.content_type == "multipart/form-data":
        head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
        mime = email.message_from_bytes(head + raw, policy=email.policy.HTTP)
        files: list[tuple[str, str, bytes]] = []
        for part in mime.iter_parts():
            data = part.get_payload(decode=True)
            data = data if isinstance(data, bytes) else b""
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                files.append((str(part.get_filename()), part.get_content_type(), data))
            elif isinstance(name, str):
                out[name] = data.decode()
        if files:
            out["attachments"] = files
        return out
    if request.content_type == "application/x-www-form-urlencoded":
        return out | dict(urllib.parse.parse_qsl(raw.decode()))
    if raw.strip():
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise Answer(400, {"error": "Invalid JSON"}) from err
        if isinstance(body, dict):
            out.update(body)
    return out


def add_routes(cw: FakeChatwoot, app: web.Application) -> None:
    """Register the Application API under /api/v1/accounts/{account_id}."""
    p = "/api/v1/accounts/{account_id}"

    def g(handler: Route, *, bot_ok: bool = False) -> Handler:
        return guard(cw, handler, bot_ok=bot_ok)

    r = app.router
    r.add_post(p + "/contacts", g(_contact_create))
    r.add_get(p + "/contacts/search", g(_contact_search))
    r.add_post(p + "/contacts/filter", g(_contact_filter))
    r.add_get(p + "/contacts/{id:\\d+}", g(_contact_show))
    r.add_put(p + "/contacts/{id:\\d+}", g(_contact_update))
    r.add_patch(p + "/contacts/{id:\\d+}", g(_contact_update))
    r.add_post(p + "/contacts/{id:\\d+}/contact_inboxes", g(_contact_inbox_create))
    r.add_get(p + "/contacts/{id:\\d+}/conversations", g(_contact_conversations))
    r.add_post(p + "/conversations", g(_conversation_create, bot_ok=True))
    r.add_get(p + "/conversations/{id:\\d+}", g(_conversation_show))
    r.add_post(p + "/conversations/{id:\\d+}/toggle_status", g(_toggle, bot_ok=True))
    r.add_get(p + "/conversations/{id:\\d+}/messages", g(_message_list))
    r.add_post(p + "/conversations/{id:\\d+}/messages", g(_message_create, bot_ok=True))
    r.add_get(p + "/inboxes", g(_inbox_list))
    r.add_post(p + "/inboxes", g(_inbox_create))
    r.add_get(p + "/inboxes/{id:\\d+}", g(_inbox_show))
    r.add_patch(p + "/inboxes/{id:\\d+}", g(_inbox_update))
    r.add_get(p + "/webhooks", g(_webhook_list))
    r.add_post(p + "/webhooks", g(_webhook_create))
    r.add_put(p + "/webhooks/{id:\\d+}", g(_webhook_update))
    r.add_patch(p + "/webhooks/{id:\\d+}", g(_webhook_update))
    r.add_delete(p + "/webhooks/{id:\\d+}", g(_webhook_delete))
    r.add_post(p + "/actions/contact_merge", g(_contact_merge))
    r.add_get("/rails/active_storage/blobs/redirect/{id:\\d+}/{name}", _blob_handler(cw))


def _find(table: dict[int, Any], key: Any) -> Any:
    """`find(params[:id])`: 404 {"error": "Resource could not be found"} when absent."""
    try:
        return table[int(key)]
    except (KeyError, TypeError, ValueError):
        raise Answer(404, NOT_FOUND) from None


def _ok(body: Any) -> web.Response:
    return web.json_response(body)


# contacts ---------------------------------------------------------------
async def _contact_create(cw: FakeChatwoot, request: web.Request) -> web.Response:
    """POST /contacts: validate, save, then the contact_inbox (one transaction)."""
    params = await read_params(request)
    with cw.lock:
        if cw.require_contact_inbox_id and not params.get("inbox_id"):
            raise Answer(422, {"error": "param is missing or the value is empty: inbox_id"})
        contact = Contact(
            0,
            str(params.get("name") or ""),
            (str(params["email"]).strip().lower() or None) if params.get("email") else None,
            params.get("phone_number") or None,
            params.get("identifier") or None,
            dict(params.get("custom_attributes") or {}),
            dict(params.get("additional_attributes") or {}),
            cw.clock(),
        )
        cw._validate_contact(contact)
        inbox = _find(cw.inboxes, params["inbox_id"]) if params.get("inbox_id") else None
        contact.id = cw._next("contact")
        cw.contacts_by_id[contact.id] = contact
        ci = None
        if inbox is not None:
            try:
                ci = cw._contact_inbox(contact, inbox, params.get("source_id"))
            except Answer:
                del cw.contacts_by_id[contact.id]  # the transaction rolls back
                raise
        cw._dispatch("contact_created", None, cw.contact_hook(contact))
        inbox_body = cw.inbox_json(inbox) if inbox else None
        body = {
            "contact": cw.contact_json(contact),
            "contact_inbox": {"inbox": inbox_body, "source_id": ci.source_id if ci else None},
        }
        return _ok({"payload": body})


def _page(cw: FakeChatwoot, request: web.Request, found: list[Contact]) -> web.Response:
    """15 contacts a page (RESULTS_PER_PAGE), `page` from 1."""
    try:
        page = max(1, int(request.query.get("page", "1")))
    except ValueError:
        page = 1
    chunk = found[(page - 1) * 15 : page * 15]
    meta = {"count": len(found), "current_page": page, "has_more": len(found) > page * 15}
    return _ok({"meta": meta, "payload": [cw.contact_json(c) for c in chunk]})


async def _contact_search(cw: FakeChatwoot, request: web.Request) -> web.Response:
    """ILIKE %q% on name, email, phone; LIKE (case-sensitive) on identifier; id if digits."""
    q = request.query.get("q", "").strip()
    if not q:
        raise Answer(422, {"error": "Specify search string with parameter q"})
    low = q.lower()
    with cw.lock:
        found = [
            c
            for c in cw.contacts_by_id.values()
            if any(low in (v or "").lower() for v in (c.name, c.email, c.phone_number))
            or q in (c.identifier or "")
            or (q.isdigit() and c.id == int(q))
        ]
        return _page(cw, request, found)


async def _contact_filter(cw: FakeChatwoot, request: web.Request) -> web.Response:
    """POST /contacts/filter: standard or custom attributes, equal_to / not_equal_to /
    contains / does_not_contain, joined by each condition's query_operator (◐ subset)."""
    params = await read_params(request)
    conditions = params.get("payload")
    if not isinstance(conditions, list) or not conditions:
        raise Answer(422, {"error": "Invalid attribute key - []"})
    with cw.lock:
        found = [c for c in cw.contacts_by_id.values() if _matches(cw, c, conditions)]
        return _page(cw, request, found)


def _matches(cw: FakeChatwoot, contact: Contact, conditions: list[dict[str, Any]]) -> bool:
    result: bool | None = None
    joiner = "and"
    for cond in conditions:
        key = str(cond.get("attribute_key", ""))
        op = cond.get("filter_operator")
        values = [str(v).lower() for v in cond.get("values") or []]
        if key in ("name", "email", "phone_number", "identifier"):
            actual = str(getattr(contact, key) or "").lower()
        elif key in contact.custom_attributes:
            actual = str(contact.custom_attributes[key]).lower()
        elif cond.get("attribute_model") == "custom_attribute" or key in ("id",):
            actual = str(contact.id) if key == "id" else ""
        else:
            raise Answer(422, {"error": f"Invalid attribute key - [{key}]"})
        if op == "equal_to":
            hit = actual in values
        elif op == "not_equal_to":
            hit = actual not in values
        elif op in ("contains", "does_not_contain"):
            hit = any(v in actual for v in values) == (op == "contains")
        else:
            raise Answer(422, {"error": f"Invalid operator for {key}: {op}"})  # ◐ wording
        result = hit if result is None else (result and hit if joiner == "and" else result or hit)
        joiner = str(cond.get("query_operator") or "and").lower()
    return bool(result)


async def _contact_show(cw: FakeChatwoot, request: web.Request) -> web.Response:
    with cw.lock:
        contact = _find(cw.contacts_by_id, request.match_info["id"])
        return _ok({"payload": cw.contact_json(contact)})


async def _contact_update(cw: FakeChatwoot, request: web.Request) -> web.Response:
    """PUT /contacts/{id}: custom/additional attributes are merged, the rest replaced."""
    params = await read_params(request)
    with cw.lock:
        contact = _find(cw.contacts_by_id, request.match_info["id"])
        before = Contact(**vars(contact))
        before.custom_attributes = dict(contact.custom_attributes)
        before.additional_attributes = dict(contact.additional_attributes)
        for key in ("name", "phone_number", "identifier"):
            if key in params:
                setattr(contact, key, params[key] or None)
        if "email" in params:
            contact.email = str(params["email"] or "").strip().lower() or None
        contact.custom_attributes.update(params.get("custom_attributes") or {})
        contact.additional_attributes.update(params.get("additional_attributes") or {})
        try:
            cw._validate_contact(contact)
        except Invalid:
            cw.contacts_by_id[contact.id] = before
            raise
        cw._dispatch("contact_updated", None, cw.contact_hook(contact))
        return _ok({"payload": cw.contact_json(contact)})


async def _contact_inbox_create(cw: FakeChatwoot, request: web.Request) -> web.Response:
    """Find or create (contact, inbox, source_id). A source_id that another contact holds in
    that inbox hits the unique index: an unhandled RecordNotUnique, i.e. a 500 (◐ the
    older controller's plain create! answered 422 for any duplicate)."""
    params = await read_params(request)
    with cw.lock:
        contact = _find(cw.contacts_by_id, request.match_info["id"])
        inbox = _find(cw.inboxes, params.get("inbox_id"))
        try:
            ci = cw._contact_inbox(contact, inbox, params.get("source_id"))
        except Answer:
            raise Answer(500, "Internal Server Error") from None
        return _ok(cw.contact_inbox_json(ci))


async def _contact_conversations(cw: FakeChatwoot, request: web.Request) -> web.Response:
    """The contact's conversations, newest id first, at most 20 (contacts/conversations)."""
    with cw.lock:
        contact = _find(cw.contacts_by_id, request.match_info["id"])
        convs = [c for c in cw.conversations_by_id.values() if c.contact_id == contact.id]
        convs.sort(key=lambda c: -c.id)
        return _ok({"payload": [cw.conversation_json(c) for c in convs[:20]]})


async def _contact_merge(cw: FakeChatwoot, request: web.Request) -> web.Response:
    """The mergee's conversations, messages and contact_inboxes move to the base; its
    fields fill the base's blanks; the mergee is deleted. Answers the base contact."""
    params = await read_params(request)
    with cw.lock:
        base = _find(cw.contacts_by_id, params.get("base_contact_id"))
        mergee = _find(cw.contacts_by_id, params.get("mergee_contact_id"))
        if base.id != mergee.id:
            for conv in cw.conversations_by_id.values():
                conv.contact_id = base.id if conv.contact_id == mergee.id else conv.contact_id
            for ci in cw.contact_inboxes.values():
                ci.contact_id = base.id if ci.contact_id == mergee.id else ci.contact_id
            for m in cw.messages_by_id.values():
                if m.sender_type == "Contact" and m.sender_id == mergee.id:
                    m.sender_id = base.id
            del cw.contacts_by_id[mergee.id]
            for key in ("name", "email", "phone_number", "identifier"):
                if not getattr(base, key):
                    setattr(base, key, getattr(mergee, key))
            base.custom_attributes = mergee.custom_attributes | base.custom_attributes
        return _ok(cw.contact_json(base))


# conversations ------------------------------------------------------------
async def _conversation_create(cw: FakeChatwoot, request: web.Request) -> web.Response:
    """ConversationBuilder: the contact_inbox by (contact, inbox, source_id) or by source_id
    alone; with lock_to_single_conversation, its first conversation instead of a new one;
    then `message` (default outgoing) is added either way."""
    params = await read_params(request)
    source_id = params.get("source_id")
    with cw.lock:
        if cw.require_conversation_source_id and not source_id:
            raise Answer(422, {"error": "param is missing or the value is empty: source_id"})
        inbox = _find(cw.inboxes, params["inbox_id"]) if params.get("inbox_id") else None
        contact = (
            _find(cw.contacts_by_id, params["contact_id"]) if params.get("contact_id") else None
        )
        if inbox is not None and contact is not None:
            try:
                ci = cw._contact_inbox(contact, inbox, source_id)
            except Answer:
                raise Answer(422, {"error": "source_id should be unique"}) from None
        else:
            held = [c for c in cw.contact_inboxes.values() if c.source_id == source_id]
            if not held:
                raise Answer(404, NOT_FOUND)
            ci = held[0]
        status = params.get("status") or "open"
        if status not in STATUSES:
            raise Answer(422, {"error": f"'{status}' is not a valid status"})
        conv = _existing(cw, ci)
        if conv is None:
            now = cw.clock()
            conv = Conversation(
                cw._next("conversation"),
                ci.inbox_id,
                ci.contact_id,
                ci.id,
                status,
                dict(params.get("custom_attributes") or {}),
                dict(params.get("additional_attributes") or {}),
                now,
                now,
                str(uuid.uuid5(uuid.NAMESPACE_URL, f"conversation-{ci.id}-{now}")),
            )
            cw.conversations_by_id[conv.id] = conv
            cw._dispatch("conversation_created", conv.inbox_id, cw.conv_hook(conv))
        first = params.get("message")
        if isinstance(first, dict) and first:
            _build_message(cw, conv, first, request[OWNER])
        return _ok(cw.conversation_json(conv))


def _existing(cw: FakeChatwoot, ci: ContactInbox) -> Conversation | None:
    if not cw.inboxes[ci.inbox_id].lock_to_single_conversation:
        return None
    mine = [c for c in cw.conversations_by_id.values() if c.contact_inbox_id == ci.id]
    return mine[0] if mine else None


async def _conversation_show(cw: FakeChatwoot, request: web.Request) -> web.Response:
    with cw.lock:
        conv = _find(cw.conversations_by_id, request.match_info["id"])
        return _ok(cw.conversation_json(conv))


async def _toggle(cw: FakeChatwoot, request: web.Request) -> web.Response:
    """`status` given: set it; absent: open <-> resolved."""
    params = await read_params(request)
    with cw.lock:
        conv = _find(cw.conversations_by_id, request.match_info["id"])
        status = params.get("status") or ("resolved" if conv.status == "open" else "open")
        if status not in STATUSES:
            raise Answer(422, {"error": f"'{status}' is not a valid status"})
        changed = status != conv.status
        conv.status = status
        if changed:
            cw._dispatch("conversation_status_changed", conv.inbox_id, cw.conv_hook(conv))
        payload = {
            "success": True,
            "conversation_id": conv.id,
            "current_status": conv.status,
            "snoozed_until": None,
        }
        return _ok({"meta": {}, "payload": payload})


async def _message_list(cw: FakeChatwoot, request: web.Request) -> web.Response:
    """MessageFinder: the last 20; `before=<id>`: 20 before it; `after=<id>`: up to 100."""
    with cw.lock:
        conv = _find(cw.conversations_by_id, request.match_info["id"])
        found = [m for m in cw.messages_by_id.values() if m.conversation_id == conv.id]
        before, after = request.query.get("before"), request.query.get("after")
        if after and after.isdigit():
            found = [m for m in found if m.id > int(after)]
            found = found[:100] if not before else found
        if before and before.isdigit():
            found = [m for m in found if m.id < int(before)]
        if not after or before:
            found = found[-20:]
        meta = {"labels": [], "additional_attributes": {}, "contact_id": conv.contact_id}
        return _ok({"meta": meta, "payload": [cw.message_json(m) for m in found]})


async def _message_create(cw: FakeChatwoot, request: web.Request) -> web.Response:
    """Messages::MessageBuilder; any error in it is a 422 {"error": message}."""
    params = await read_params(request)
    with cw.lock:
        conv = _find(cw.conversations_by_id, request.match_info["id"])
        message = _build_message(cw, conv, params, request[OWNER])
        return _ok(cw.message_json(message))


def _build_message(
    cw: FakeChatwoot, conv: Conversation, params: dict[str, Any], owner: tuple[str, int]
) -> Message:
    raw_type = params.get("message_type", "outgoing")
    if raw_type in MESSAGE_TYPES:
        message_type = MESSAGE_TYPES.index(raw_type)
    elif isinstance(raw_type, int) and not isinstance(raw_type, bool) and 0 <= raw_type < 4:
        message_type = raw_type  # the enum also takes its integer (JSON only)
    else:
        raise Answer(422, {"error": f"'{raw_type}' is not a valid message_type"})
    # The builder compares the *string*: an integer 0 slips past this check upstream too.
    api = cw.inboxes[conv.inbox_id].channel_type == "Channel::Api"
    if raw_type == "incoming" and not api:
        raise Answer(422, {"error": "Incoming messages are only allowed in Api inboxes"})
    private = params.get("private", False)
    if isinstance(private, str):
        private = private.strip().lower() not in ("", "false", "0", "f", "off")
    content = params.get("content")
    sender = owner if message_type == 1 else ("Contact", conv.contact_id)
    return cw._create_message(
        conv,
        content=None if content is None else str(content),
        message_type=message_type,
        private=bool(private),
        sender=sender,
        files=[f for f in params.get("attachments") or [] if isinstance(f, tuple)],
        content_type=str(params.get("content_type") or "text"),
        source_id=params.get("source_id") if cw.honour_message_source_id else None,
        echo_id=params.get("echo_id"),
    )


async def _blob(cw: FakeChatwoot, request: web.Request) -> web.Response:
    """An attachment's data_url (ActiveStorage redirect, here served directly)."""
    with cw.lock:
        a = cw.attachments.get(int(request.match_info["id"]))
    if a is None:
        return web.json_response(NOT_FOUND, status=404)
    return web.Response(body=a.data, content_type=a.content_type)


# inboxes and webhooks -------------------------------------------------------
async def _inbox_list(cw: FakeChatwoot, request: web.Request) -> web.Response:
    with cw.lock:
        return _ok({"payload": [cw.inbox_json(i) for i in cw.inboxes.values()]})


async def _inbox_show(cw: FakeChatwoot, request: web.Request) -> web.Response:
    with cw.lock:
        return _ok(cw.inbox_json(_find(cw.inboxes, request.match_info["id"])))


async def _inbox_create(cw: FakeChatwoot, request: web.Request) -> web.Response:
    """POST /inboxes with channel {"type": "api", "webhook_url"} (only API is faked)."""
    params = await read_params(request)
    channel = params.get("channel") or {}
    if channel.get("type") != "api":
        raise Answer(422, {"error": "Invalid channel type"})
    lock = bool(params.get("lock_to_single_conversation"))
    inbox_id = cw.add_inbox(str(params.get("name") or "API"), "Channel::Api", lock)
    with cw.lock:
        inbox = cw.inboxes[inbox_id]
        inbox.webhook_url = channel.get("webhook_url") or None
        return _ok(cw.inbox_json(inbox))


async def _inbox_update(cw: FakeChatwoot, request: web.Request) -> web.Response:
    params = await read_params(request)
    with cw.lock:
        inbox = _find(cw.inboxes, request.match_info["id"])
        if "lock_to_single_conversation" in params:
            inbox.lock_to_single_conversation = bool(params["lock_to_single_conversation"])
        if "webhook_url" in (params.get("channel") or {}):
            inbox.webhook_url = params["channel"]["webhook_url"] or None
        if "name" in params:
            inbox.name = str(params["name"])
        return _ok(cw.inbox_json(inbox))


def _hook_json(cw: FakeChatwoot, hook: Webhook) -> dict[str, Any]:
    inbox = cw.inboxes.get(hook.inbox_id or 0)
    return {
        "id": hook.id,
        "url": hook.url,
        "name": hook.name,
        "subscriptions": list(hook.subscriptions),
        "account_id": cw.account_id,
        "inbox": {"id": inbox.id, "name": inbox.name} if inbox else None,
        "secret": hook.secret,  # >= 4.11.2
    }


def _hook_fields(cw: FakeChatwoot, hook: Webhook, params: dict[str, Any]) -> None:
    """Rails wraps top-level keys under `webhook`; both spellings are accepted."""
    wrapped = params.get("webhook")
    src: dict[str, Any] = wrapped if isinstance(wrapped, dict) else params
    hook.url = str(src.get("url", hook.url) or "")
    hook.name = src.get("name", hook.name)
    hook.subscriptions = list(src.get("subscriptions", hook.subscriptions) or [])
    hook.inbox_id = src.get("inbox_id", hook.inbox_id)
    errors = []
    if not re.match(r"\Ahttps?://\S+\Z", hook.url):
        errors.append(("url", "Url is invalid"))
    elif any(h.url == hook.url and h.id != hook.id for h in cw.webhooks.values()):
        errors.append(("url", "Url has already been taken"))
    if not hook.subscriptions or any(s not in EVENTS for s in hook.subscriptions):
        errors.append(("subscriptions", "Subscriptions Invalid events"))
    if errors:
        raise Invalid(errors)


async def _webhook_list(cw: FakeChatwoot, request: web.Request) -> web.Response:
    with cw.lock:
        hooks = [_hook_json(cw, h) for h in cw.webhooks.values()]
        return _ok({"payload": {"webhooks": hooks}})


async def _webhook_create(cw: FakeChatwoot, request: web.Request) -> web.Response:
    params = await read_params(request)
    with cw.lock:
        hook = Webhook(0, "", None, [], "")
        _hook_fields(cw, hook, params)
        hook.id = cw._next("webhook")
        hook.secret = f"cw-webhook-secret-{hook.id}"
        cw.webhooks[hook.id] = hook
        return _ok({"payload": {"webhook": _hook_json(cw, hook)}})


async def _webhook_update(cw: FakeChatwoot, request: web.Request) -> web.Response:
    params = await read_params(request)
    with cw.lock:
        hook = _find(cw.webhooks, request.match_info["id"])
        saved = Webhook(**vars(hook))
        try:
            _hook_fields(cw, hook, params)
        except Invalid:
            cw.webhooks[hook.id] = saved
            raise
        return _ok({"payload": {"webhook": _hook_json(cw, hook)}})


async def _webhook_delete(cw: FakeChatwoot, request: web.Request) -> web.Response:
    with cw.lock:
        hook = _find(cw.webhooks, request.match_info["id"])
        del cw.webhooks[hook.id]
    return web.Response(status=200)


def _blob_handler(cw: FakeChatwoot) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        return await _blob(cw, request)

    return serve
