"""The /v1 HTTP API: the `api` channel's intake, the stream, conversations and agent actions.

Handlers translate HTTP to the core's calls and back; every refusal is raised
and turned into a problem document by one middleware (problems.py).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import nh3
import orjson
from aiohttp import web

from gateway.config import CHANNELS
from gateway.contact_graph import UNVERIFIED, Evidence, split_contact
from gateway.conversations import ThreadRef, Transition, reopen, resolve
from gateway.dedup import IdempotencyKey, digest_of
from gateway.delivery.board import letter_json
from gateway.erasure import erase_contact
from gateway.errors import InvalidInput, NotFound
from gateway.events import Author, with_offset
from gateway.identity import Handles
from gateway.ingest import Inbound
from gateway.replies import Reply
from gateway.store import Tx
from gateway.web.auth import Caller
from gateway.web.bodies import MessageIn, ReplyIn, TransitionIn
from gateway.web.context import WebContext, context
from gateway.web.sse import serve_sse

MAX_IDEMPOTENCY_KEY = 255
MAX_OFFSET = 2**62
_WHOLE = re.compile(r"[0-9]{1,19}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def int_param(request: web.Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    return whole_number(name, raw, lo, hi)


def whole_number(name: str, raw: str, lo: int, hi: int) -> int:
    if not _WHOLE.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise InvalidInput(name, f"must be a whole number from {lo} to {hi}, not {raw[:40]!r}")
    return int(raw)


def choice_param(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in allowed:
        raise InvalidInput(name, f"must be one of {', '.join(allowed)}, not {raw!r}")
    return raw


async def _json_body(request: web.Request) -> bytes:
    raw = await request.read()
    if not raw.strip():
        return raw  # no body at all: the handler decides whether that is allowed
    ctype = request.headers.get("Content-Type", "")
    mime = ctype.split(";", 1)[0].strip().lower()
    if mime and mime != "application/json" and not mime.endswith("+json"):
        raise web.HTTPUnsupportedMediaType(
            reason="Unsupported Media Type", text=f"send JSON (application/json), not {mime}"
        )
    return raw


async def _reason(request: web.Request) -> str | None:
    """The optional `{"reason": ...}` body of an action; no body at all is fine too."""
    raw = await _json_body(request)
    return (TransitionIn.model_validate_json(raw) if raw.strip() else TransitionIn()).reason


def _idempotency(
    request: web.Request, caller: Caller, operation: str, fallback: str | None, digest: bytes
) -> IdempotencyKey | None:
    header = request.headers.get("Idempotency-Key")
    if header is not None:
        if not header or len(header) > MAX_IDEMPOTENCY_KEY or not header.isprintable():
            raise InvalidInput(
                "Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters"
            )
        key, label = f"{operation}:h:{header}", f"Idempotency-Key {header!r}"
    elif fallback is not None:
        key, label = f"{operation}:x:{fallback}", f"external_id {fallback!r}"
    else:
        return None
    return IdempotencyKey(f"api:{caller.token_name}", key, digest, label)


def _check_sizes(ctx: WebContext, text: str, html: str | None) -> None:
    limit = ctx.config.ingest.max_text_size
    for name, value in (("text", text), ("html", html)):
        if value and len(value.encode()) > limit:
            raise InvalidInput(name, f"longer than [ingest] max_text_size ({limit} bytes)")


def _sanitize(html: str | None) -> str | None:
    return nh3.clean(html) if html else html


def _handles(ctx: WebContext, body: MessageIn) -> Handles:
    sender, rules = body.sender, ctx.ingestor.rules
    return Handles(
        email=rules.email(sender.email, "from.email") if sender.email else None,
        phone=rules.phone(sender.phone, "from.phone") if sender.phone else None,
        visitor_id=rules.visitor(sender.visitor_id, "from.visitor_id")
        if sender.visitor_id
        else None,
    )


def _evidence(caller: Caller) -> Evidence:
    return Evidence(True, "trusted_api_token") if caller.trusted else UNVERIFIED


async def post_message(request: web.Request) -> web.Response:
    ctx = context(request)
    caller = ctx.tokens.caller(request)
    try:
        body = MessageIn.model_validate_json(await _json_body(request))
        _check_sizes(ctx, body.text, body.html)
        handles = _handles(ctx, body)
        digest = digest_of(body.model_dump_json(by_alias=True).encode())
        item = Inbound(
            channel="api",
            source=f"/api/{caller.token_name}",
            handles=handles,
            name=body.sender.name,
            subject=body.subject,
            text=body.text,
            html=_sanitize(body.html),
            external_id=body.external_id,
            thread=ThreadRef("api", body.thread) if body.thread else None,
            sent_at=body.sent_at,
            idempotency=_idempotency(request, caller, "msg", body.external_id, digest),
            evidence=_evidence(caller),
        )
        ack = await ctx.ingestor.ingest(item)
    except Exception as err:
        ctx.metrics.ingest_errors.labels("api", type(err).__name__).inc()
        raise
    return _json(ack.as_json(), status=200 if ack.duplicate else 201)


async def get_stream(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    ctx.tokens.caller(request)
    after = int_param(request, "after", 0, 0, MAX_OFFSET) or 0
    limit = int_param(request, "limit", 100, 1, 1000) or 100
    if "text/event-stream" in request.headers.get("Accept", ""):
        last_id = request.headers.get("Last-Event-ID", "").strip()
        if last_id:
            after = whole_number("Last-Event-ID", last_id, 0, MAX_OFFSET)
        return await serve_sse(request, ctx, after)
    rows = await ctx.reader.read(after, limit)
    next_after = rows[-1][0] if rows else after
    body = (
        b'{"events":['
        + b",".join(with_offset(seq, env) for seq, env in rows)
        + b'],"next_after":'
        + str(next_after).encode()
        + b"}"
    )
    return web.Response(body=body, content_type="application/json")


async def list_conversations(request: web.Request) -> web.Response:
    ctx = context(request)
    ctx.tokens.caller(request)
    status = choice_param(request, "status", ("open", "resolved"))
    channel = choice_param(request, "channel", CHANNELS)
    before = int_param(request, "before", None, 1, MAX_OFFSET)
    limit = int_param(request, "limit", 50, 1, 500) or 50
    rows = await ctx.store.list_conversations(status, channel, before, limit)
    return _json(
        {
            "conversations": [row.as_json() for row in rows],
            "next_before": rows[-1].number if len(rows) == limit else None,
        }
    )


async def get_conversation(request: web.Request) -> web.Response:
    ctx = context(request)
    ctx.tokens.caller(request)
    conversation_id = request.match_info["conversation_id"]
    row = await ctx.store.get_conversation(conversation_id)
    if row is None:
        raise NotFound(f"no conversation {conversation_id!r}")
    after = int_param(request, "after", 0, 0, MAX_OFFSET) or 0
    limit = int_param(request, "limit", 500, 1, 1000) or 500
    rows = await ctx.store.conversation_events(conversation_id, after, limit)
    events = b",".join(with_offset(seq, env) for seq, env in rows)
    head = orjson.dumps(row.as_json())
    next_after = str(rows[-1][0] if len(rows) == limit else "null").encode()
    parked = await ctx.board.dead_letters(None, conversation_id)
    body = b'{"conversation":' + head + b',"events":[' + events + b'],"next_after":'
    tail = b',"dead_letters":' + orjson.dumps([letter_json(p) for p in parked]) + b"}"
    return web.Response(body=body + next_after + tail, content_type="application/json")


async def post_reply(request: web.Request) -> web.Response:
    ctx = context(request)
    caller = ctx.tokens.caller(request)
    conversation_id = request.match_info["conversation_id"]
    body = ReplyIn.model_validate_json(await _json_body(request))
    _check_sizes(ctx, body.text, body.html)
    digest = digest_of(conversation_id.encode(), body.model_dump_json().encode())
    ack = await ctx.replies.record(
        Reply(
            conversation_id=conversation_id,
            source=f"/api/{caller.token_name}",
            text=body.text,
            html=_sanitize(body.html),
            internal=body.internal,
            author=Author(kind=body.author.kind, name=body.author.name),
            idempotency=_idempotency(request, caller, "reply", None, digest),
        )
    )
    return _json(ack.as_json(), status=200 if ack.duplicate else 201)


async def _transition(request: web.Request, action: str) -> web.Response:
    ctx = context(request)
    caller = ctx.tokens.caller(request)
    conversation_id = request.match_info["conversation_id"]
    reason = await _reason(request)
    change = resolve if action == "resolve" else reopen
    now = ctx.ingestor.now()

    async def unit(tx: Tx) -> Transition:
        return await change(
            tx, conversation_id, source=f"/api/{caller.token_name}", now=now, reason=reason
        )

    result = await ctx.store.write(unit)
    return _json(
        {
            "conversation": result.conversation.as_json(),
            "changed": result.changed,
            "offset": result.offset,
        }
    )


async def post_resolve(request: web.Request) -> web.Response:
    return await _transition(request, "resolve")


async def post_reopen(request: web.Request) -> web.Response:
    return await _transition(request, "reopen")


async def get_contact(request: web.Request) -> web.Response:
    ctx = context(request)
    ctx.tokens.caller(request)
    requested = request.match_info["contact_id"]
    contact = await ctx.store.get_contact(requested)
    if contact is None:
        raise NotFound(f"no contact {requested!r}")
    return _json(contact.as_json(requested))


async def find_contact(request: web.Request) -> web.Response:
    """A contact by any of its handles, written any way ("030 1234567", "Ann@Example.com")."""
    ctx = context(request)
    ctx.tokens.caller(request)
    raw = request.query.get("handle", "")
    if not raw.strip():
        raise InvalidInput("handle", "give ?handle= an email address, phone number or visitor id")
    kind, value = ctx.ingestor.rules.any_handle(raw, "handle")
    found = await ctx.store.contact_by_handle(kind, value)
    contact = await ctx.store.get_contact(found) if found else None
    if contact is None:
        raise NotFound(f"no contact has the {kind} {value!r}")
    return _json(contact.as_json(found or ""))


ContactAction = Callable[..., Awaitable[int]]


async def _contact_action(request: web.Request, action: ContactAction) -> web.Response:
    """Run a contact-changing action (split, erase) and answer with the contact after it."""
    ctx = context(request)
    caller = ctx.tokens.caller(request)
    contact_id = request.match_info["contact_id"]
    reason = await _reason(request)
    now = ctx.ingestor.now()

    async def unit(tx: Tx) -> int:
        source = f"/api/{caller.token_name}"
        return await action(tx, contact_id, now=now, source=source, reason=reason)

    offset = await ctx.store.write(unit)
    contact = await ctx.store.get_contact(contact_id)
    if contact is None:
        raise NotFound(f"no contact {contact_id!r}")
    return _json({"offset": offset, "contact": contact.as_json(contact_id)})


async def post_split(request: web.Request) -> web.Response:
    """Undo a merge: the contact stands alone again, with the handles it came with."""
    return await _contact_action(request, split_contact)


async def post_erase(request: web.Request) -> web.Response:
    """Erase a person: handles, name and message content go; tombstones keep the offsets."""
    return await _contact_action(request, erase_contact)


async def get_attachment(request: web.Request) -> web.Response:
    """An attachment's content; its id is att_ + the SHA-256 of the bytes."""
    ctx = context(request)
    ctx.tokens.caller(request)
    wanted = request.match_info["attachment_id"]
    sha = wanted.removeprefix("att_")
    found = await ctx.store.get_attachment(sha) if _SHA256.fullmatch(sha) else None
    if found is None:
        raise NotFound(f"no attachment {wanted!r}")
    content_type, data = found
    return web.Response(
        body=data,
        headers={
            "Content-Type": content_type,
            "Content-Disposition": "attachment",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, max-age=86400, immutable",
        },
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", post_message)
    app.router.add_get("/v1/stream", get_stream)
    app.router.add_get("/v1/conversations", list_conversations)
    app.router.add_get("/v1/conversations/{conversation_id}", get_conversation)
    app.router.add_post("/v1/conversations/{conversation_id}/replies", post_reply)
    app.router.add_post("/v1/conversations/{conversation_id}/resolve", post_resolve)
    app.router.add_post("/v1/conversations/{conversation_id}/reopen", post_reopen)
    app.router.add_get("/v1/contacts", find_contact)
    app.router.add_get("/v1/contacts/{contact_id}", get_contact)
    app.router.add_post("/v1/contacts/{contact_id}/split", post_split)
    app.router.add_post("/v1/contacts/{contact_id}/erase", post_erase)
    app.router.add_get("/v1/attachments/{attachment_id}", get_attachment)
