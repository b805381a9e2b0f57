"""Zendesk Support's ticket API as the create-once protocol needs it (reference §5).

A conversation is a ticket whose `external_id` is the conversation id (found
again with GET /tickets?external_id=, which is not unique, so the oldest is
kept); the create also carries an Idempotency-Key, so a retry within
Zendesk's window gets the first answer back instead of a second ticket. The
customer is an end user found or made by `external_id` (hl_<contact id>).
Each comment's audit carries the helpline event id in its metadata, which is
how a retry after an ambiguous answer checks before posting again.
"""

from __future__ import annotations

from typing import Any

from gateway.delivery.board import BackendHandle
from gateway.delivery.failures import AlreadyExists, PermanentFailure
from gateway.delivery.http import JsonClient
from gateway.delivery.items import Customer, Item, ItemKind
from gateway.store.delivery import Ref

MAX_PAGES = 20  # audits pages read when checking for an event (100 each)


def user_external_id(contact_id: str) -> str:
    return f"hl_{contact_id}"


class ZendeskApi:
    def __init__(
        self,
        client: JsonClient,
        handle: BackendHandle,
        *,
        tags: list[str],
        statuses: dict[str, str],
    ) -> None:
        self._http = client
        self._handle = handle
        self._tags = tags
        self._statuses = statuses
        self._uploads: dict[tuple[str, str], str] = {}  # (event, attachment) -> token

    async def me(self) -> dict[str, Any]:
        answer = await self._http.request("GET", "/api/v2/users/me")
        user = (answer.body or {}).get("user") or {}
        if user.get("id") is None:
            raise PermanentFailure("Zendesk answered /users/me without a user: check email/token")
        return dict(user)

    # -- TicketApi -----------------------------------------------------------
    async def find_tickets(self, item: Item) -> list[str]:
        answer = await self._http.request(
            "GET", "/api/v2/tickets", params={"external_id": item.conversation_id}
        )
        tickets = (answer.body or {}).get("tickets") or []
        tickets.sort(key=lambda t: (t.get("created_at") or "", int(t["id"])))
        return [str(t["id"]) for t in tickets]

    async def create_ticket(self, item: Item, customer: Customer) -> str:
        requester = await self._requester(customer)
        body = {
            "ticket": {
                "subject": item.title,
                "external_id": item.conversation_id,
                "tags": [*self._tags, *_channel_tag(item)],
                "requester_id": requester,
                "comment": await self._comment(item, requester),
                "metadata": {"helpline_event": item.event_id, "helpline_channel": item.channel},
            }
        }
        key = f"helpline-{item.conversation_id}"
        try:
            answer = await self._http.request(
                "POST", "/api/v2/tickets", json=body, headers={"Idempotency-Key": key}
            )
        except PermanentFailure as err:
            # The key was used with another body (new upload tokens after a restart): the
            # first create went through, so look it up.
            if err.status == 400 and "Idempotent" in str(err.body):
                raise AlreadyExists(str(err), status=400, body=err.body) from err
            raise
        return str(answer.body["ticket"]["id"])

    async def add(self, ticket_id: str, item: Item, customer: Customer) -> None:
        requester = await self._requester(customer) if item.kind is ItemKind.CUSTOMER else None
        ticket: dict[str, Any] = {
            "comment": await self._comment(item, requester),
            "metadata": {"helpline_event": item.event_id, "helpline_channel": item.channel},
        }
        if item.kind is ItemKind.CUSTOMER:
            ticket["additional_tags"] = _channel_tag(item)  # the channels the customer used
        await self._http.request("PUT", f"/api/v2/tickets/{ticket_id}", json={"ticket": ticket})

    async def already_added(self, ticket_id: str, item: Item) -> bool:
        path: str | None = f"/api/v2/tickets/{ticket_id}/audits"
        params: dict[str, str] | None = {"page[size]": "100"}
        for _ in range(MAX_PAGES):
            if path is None:
                break
            answer = await self._http.request("GET", path, params=params)
            body = answer.body or {}
            for audit in body.get("audits") or []:
                custom = ((audit.get("metadata") or {}).get("custom")) or {}
                if custom.get("helpline_event") == item.event_id:
                    return True
            more = (body.get("meta") or {}).get("has_more")
            path = (body.get("links") or {}).get("next") if more else None
            params = None
        return False

    async def set_status(self, ticket_id: str, status: str) -> None:
        target = self._statuses.get(status)
        if target:
            body = {"ticket": {"status": target}}
            await self._http.request("PUT", f"/api/v2/tickets/{ticket_id}", json=body)

    async def merge_users(self, source: str, target: str) -> None:
        """PUT /users/{source}/merge: end users only; the source's tickets move along."""
        body = {"user": {"id": int(target)}}
        await self._http.request("PUT", f"/api/v2/users/{source}/merge", json=body)

    # -- pieces ----------------------------------------------------------------
    async def _requester(self, customer: Customer) -> int:
        """The customer's end user, found or made once per contact (create_or_update
        matches on external_id, then email, so a retry never makes a second user)."""
        ref = await self._handle.ref("user", customer.contact_id)
        if ref is not None and ref.remote_id:
            return int(ref.remote_id)
        user: dict[str, Any] = {
            "name": customer.label,
            "external_id": user_external_id(customer.contact_id),
            "skip_verify_email": True,
        }
        if customer.email:
            user["email"] = customer.email
        if customer.phone:
            user["identities"] = [{"type": "phone_number", "value": customer.phone}]
        answer = await self._http.request(
            "POST", "/api/v2/users/create_or_update", json={"user": user}
        )
        user_id = int(answer.body["user"]["id"])
        await self._handle.put_ref(Ref("user", customer.contact_id, str(user_id), "created"))
        return user_id

    async def _comment(self, item: Item, requester: int | None) -> dict[str, Any]:
        comment: dict[str, Any] = {"public": item.kind is not ItemKind.NOTE}
        if item.html and item.kind is not ItemKind.CUSTOMER:
            comment["html_body"] = item.html
        else:
            comment["body"] = item.text or "(no text)"
        if requester is not None:
            comment["author_id"] = requester
        uploads = [await self._upload(item, att.id, att.filename) for att in item.attachments]
        uploads = [u for u in uploads if u]
        if uploads:
            comment["uploads"] = uploads
        return comment

    async def _upload(self, item: Item, attachment_id: str, filename: str) -> str | None:
        """An upload token, kept per event so a retried request carries the same body."""
        held = self._uploads.get((item.event_id, attachment_id))
        if held:
            return held
        found = await self._handle.attachment(attachment_id)
        if found is None:
            return None
        content_type, data = found
        answer = await self._http.request(
            "POST",
            "/api/v2/uploads",
            params={"filename": filename},
            data=data,
            headers={"Content-Type": content_type},
        )
        token = str(answer.body["upload"]["token"])
        if len(self._uploads) > 1000:
            self._uploads.clear()
        self._uploads[(item.event_id, attachment_id)] = token
        return token

    async def comments(self, ticket_id: str) -> list[dict[str, Any]]:
        """Every comment of a ticket, oldest first (cursor pages of 100)."""
        found: list[dict[str, Any]] = []
        path: str | None = f"/api/v2/tickets/{ticket_id}/comments"
        params: dict[str, str] | None = {"page[size]": "100"}
        for _ in range(MAX_PAGES):
            if path is None:
                break
            answer = await self._http.request("GET", path, params=params)
            body = answer.body or {}
            found.extend(body.get("comments") or [])
            more = (body.get("meta") or {}).get("has_more")
            path = (body.get("links") or {}).get("next") if more else None
            params = None
        return found

    async def role(self, user_id: str) -> str:
        """A user's role: "end-user", "agent" or "admin"."""
        answer = await self._http.request("GET", f"/api/v2/users/{user_id}")
        return str(((answer.body or {}).get("user") or {}).get("role") or "end-user")

    async def ticket(self, ticket_id: str) -> dict[str, Any]:
        answer = await self._http.request("GET", f"/api/v2/tickets/{ticket_id}")
        return dict(answer.body["ticket"])

    async def download(self, url: str, limit: int) -> bytes:
        return await self._http.download(url, limit=limit)


def _channel_tag(item: Item) -> list[str]:
    """A tag naming the channel a customer wrote on (helpline_email, helpline_chat...)."""
    return [f"helpline_{item.channel}"] if item.kind is ItemKind.CUSTOMER else []
