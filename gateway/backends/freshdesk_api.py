"""Tickets, contacts and conversations in Freshdesk API v2: the `TicketApi` of the backend.

Freshdesk has no idempotency handle (backends.md §6.5), so a ticket carries helpline's
conversation id in a text custom field, and the lookup after an ambiguous create is the
synchronous listing of the requester's tickets (the search API lags behind writes). That
needs the requester's id before the create: the contact is found or created first, and
the requester a conversation's ticket was created for is kept durably, so a lookup after a
restart names the same contact. Follow-ups have no marker field either: each body ends
with an HTML comment holding the event id, which `already_added` looks for.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
import nh3
import structlog

from gateway.backends.freshdesk_config import FreshdeskConfig
from gateway.delivery.board import BackendHandle
from gateway.delivery.failures import PermanentFailure, TemporaryFailure
from gateway.delivery.http import Answer, JsonClient
from gateway.delivery.items import Customer, Item, ItemKind
from gateway.store.delivery import Ref

MAX_UPLOAD = 20 * 1024 * 1024  # all attachments of one request (§6.1 ◐)
MAX_PAGES = 10  # listing pages followed (100 rows each) before giving up
MARK = "<!-- helpline:{} -->"
_NEXT = re.compile(r'<([^>]+)>;\s*rel="?next"?')
_TAG = re.compile(r"<[^>]+>")


class FreshdeskApi:
    """One Freshdesk account; every call raises the classified DeliveryFailures."""

    def __init__(
        self, config: FreshdeskConfig, handle: BackendHandle, log: structlog.stdlib.BoundLogger
    ) -> None:
        self.config = config
        self._handle = handle
        self._log = log
        self.client = JsonClient(
            config.url + "/api/v2",
            headers={},
            timeout=float(config.timeout),
            basic=(config.api_key.get_secret_value(), "X"),  # the password is ignored (§6.1)
        )

    async def close(self) -> None:
        await self.client.close()

    # -- TicketApi ---------------------------------------------------------------------
    async def find_tickets(self, item: Item) -> list[str]:
        requester = await self._known_requester(item)
        found = await self._listed(requester, item.conversation_id) if requester else []
        if not found:  # a requester merged or changed in Freshdesk: the lagging index
            found = await self._searched(item.conversation_id)
        return found

    async def create_ticket(self, item: Item, customer: Customer) -> str:
        requester = await self._requester(customer)
        # Durable before the create leaves, so the lookup after a crash lists this requester.
        await self._handle.put_state(_requester_key(item.conversation_id), str(requester))
        fields: dict[str, Any] = {
            "requester_id": requester,
            "subject": item.title[:255],
            "status": self.config.status_open,
            "priority": self.config.priority,
            "source": self.config.source_of(item.channel),
            "tags": list(self.config.tags),
            "custom_fields": {self.config.marker_field: item.conversation_id},
        }
        if self.config.group_id is not None:
            fields["group_id"] = self.config.group_id
        answer = await self._send("/tickets", fields, "description", item, customer)
        return str(answer.body["id"])

    async def add(self, ticket_id: str, item: Item, customer: Customer) -> None:
        fields: dict[str, Any]
        if item.kind is ItemKind.CUSTOMER:
            user = await self._author(ticket_id, item.customer or customer)
            fields = {"private": False, "incoming": True, "user_id": user}
        elif item.kind is ItemKind.AGENT:
            fields = {"private": self.config.agent_messages == "private_note"}
        else:
            fields = {"private": True}
        await self._send(f"/tickets/{int(ticket_id)}/notes", fields, "body", item, customer)

    async def already_added(self, ticket_id: str, item: Item) -> bool:
        rows = await self.conversations(ticket_id)
        if any(MARK.format(item.event_id) in str(row.get("body") or "") for row in rows):
            return True
        if any("<!-- helpline:" in str(row.get("body") or "") for row in rows):
            return False  # markers survive in this account, and this one is not there
        # Markers stripped by Freshdesk (◐ unverified either way): the last message's text.
        expected = _words(_plain(self._body(item, [])))
        return bool(rows) and _words(str(rows[-1].get("body_text") or "")) == expected

    async def set_status(self, ticket_id: str, status: str) -> None:
        code = self.config.status_resolved if status == "resolved" else self.config.status_open
        await self.client.request("PUT", f"/tickets/{int(ticket_id)}", json={"status": code})

    # -- MergesUsers ----------------------------------------------------------------------
    async def merge_users(self, source: str, target: str) -> None:
        """POST /contacts/merge: the secondary contact's tickets move to the primary, its
        emails become the primary's other_emails, and it is deleted (§6.4).

        A repeated merge (the first answer was lost) names the secondary as invalid, since
        it is gone: that answer counts as done once a read confirms the contact is gone."""
        body = {"primary_contact_id": int(target), "secondary_contact_ids": [int(source)]}
        try:
            await self.client.request("POST", "/contacts/merge", json=body)
        except PermanentFailure as err:
            if not (err.status == 400 and _names_only_the_secondary(err.body)):
                raise
            gone = await self.client.request("GET", f"/contacts/{int(source)}", allow=(404,))
            if gone.status != 404:
                raise
            self._log.info("backend.merge_already_done", source=source, target=target)

    # -- reads the backend shares --------------------------------------------------------
    async def conversations(self, ticket_id: str) -> list[dict[str, Any]]:
        """A ticket's replies and notes, oldest first, every page."""
        path = f"/tickets/{int(ticket_id)}/conversations"
        return await self._pages(path, {"per_page": "100"})

    async def agents(self) -> list[dict[str, Any]]:
        return await self._pages("/agents", {"per_page": "100"})

    async def me(self) -> dict[str, Any]:
        answer = await self.client.request("GET", "/agents/me")
        return dict(answer.body)

    async def field_exists(self, name: str) -> bool | None:
        """Whether the ticket field exists as text (None: exists, but is not a text field)."""
        answer = await self.client.request("GET", "/ticket_fields", allow=(404,))
        if answer.status == 200 and isinstance(answer.body, list):
            for field in answer.body:
                if field.get("name") == name:
                    kind = str(field.get("type") or "custom_text")
                    return True if kind in ("custom_text", "text") else None
            return False
        # No ticket_fields route answered: ask the search index whether it knows the field.
        query = f"\"{name}:'helpline-check'\""
        probe = await self.client.request(
            "GET", "/search/tickets", params={"query": query}, allow=(400,)
        )
        return probe.status == 200

    # -- contacts ------------------------------------------------------------------------
    async def _requester(self, customer: Customer) -> int:
        """The Freshdesk contact for a helpline contact, found or created once, then mapped."""
        if customer.contact_id:
            ref = await self._handle.ref("user", customer.contact_id)
            if ref is not None and ref.state == "created" and ref.remote_id:
                return int(ref.remote_id)
        body: dict[str, Any] = {"name": customer.label[:255] or "helpline customer"}
        if customer.email:
            body["email"] = customer.email
        if customer.phone:
            body["phone"] = customer.phone
        if self.config.contact_external_id and customer.contact_id:
            body["unique_external_id"] = customer.contact_id
        if len(body) == 1:
            raise PermanentFailure("the contact has no email, phone or id to make a requester of")
        answer = await self.client.request("POST", "/contacts", json=body, allow=(409,))
        if answer.status == 409:
            uid = _holder(answer.body)
            if uid is None:
                raise PermanentFailure("Freshdesk says the contact exists but names none")
            self._log.info("backend.contact_adopted", contact_id=customer.contact_id, user=uid)
        else:
            uid = int(answer.body["id"])
        if customer.contact_id:
            ref = Ref("user", customer.contact_id, str(uid), "created")
            await self._handle.put_ref(ref)
        return uid

    async def _author(self, ticket_id: str, customer: Customer) -> int:
        """Who wrote a customer message: the sender's contact, else the ticket's requester."""
        if customer.contact_id or customer.email or customer.phone:
            return await self._requester(customer)
        answer = await self.client.request("GET", f"/tickets/{int(ticket_id)}")
        return int(answer.body["requester_id"])

    async def _forget(self, customer: Customer) -> None:
        """The mapped contact is gone (deleted or merged in Freshdesk): map it again."""
        if customer.contact_id:
            await self._handle.put_ref(Ref("user", customer.contact_id, None, "pending"))

    async def _known_requester(self, item: Item) -> int | None:
        kept = await self._handle.state(_requester_key(item.conversation_id))
        if kept:
            return int(kept)
        if item.customer is not None and item.customer.contact_id:
            ref = await self._handle.ref("user", item.customer.contact_id)
            if ref is not None and ref.remote_id:
                return int(ref.remote_id)
        return None

    # -- lookups -------------------------------------------------------------------------
    async def _listed(self, requester: int, conversation_id: str) -> list[str]:
        params = {
            "requester_id": str(requester),
            "order_by": "created_at",
            "order_type": "desc",
            "per_page": "100",
        }
        try:
            rows = await self._pages("/tickets", params)
        except PermanentFailure as err:  # the requester is gone (merged, deleted)
            self._log.info("backend.listing_refused", requester=requester, error=str(err))
            return []
        return _marked(rows, self.config.marker_field, conversation_id)

    async def _searched(self, conversation_id: str) -> list[str]:
        value = conversation_id.replace("\\", "\\\\").replace("'", "\\'")
        query = f"\"{self.config.marker_field}:'{value}'\""
        try:
            answer = await self.client.request("GET", "/search/tickets", params={"query": query})
        except PermanentFailure as err:  # the field may not be searchable: no fallback then
            self._log.info("backend.search_unavailable", error=str(err))
            return []
        rows = list((answer.body or {}).get("results") or [])
        return _marked(rows, self.config.marker_field, conversation_id)

    async def _pages(self, path: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        answer = await self.client.request("GET", path, params=params)
        for _ in range(MAX_PAGES):
            rows.extend(answer.body or [])
            following = _next_link(answer)
            if following is None:
                return rows
            answer = await self.client.request("GET", following)
        self._log.warning("backend.listing_cut", path=path, rows=len(rows))
        return rows

    # -- writes --------------------------------------------------------------------------
    async def _send(
        self, path: str, fields: dict[str, Any], text_key: str, item: Item, customer: Customer
    ) -> Answer:
        """POST a ticket or note: JSON, or multipart/form-data when files ride along."""
        files, left_out = await self._files(item)
        fields[text_key] = self._body(item, left_out)
        try:
            if not files:
                return await self.client.request("POST", path, json=fields)
            return await self.client.request("POST", path, data=_form(fields, files))
        except PermanentFailure as err:
            gone = fields.get("requester_id") or fields.get("user_id")
            if not (_names_a_missing_user(err.body) and customer.contact_id and gone):
                raise
            # Deleted or merged in Freshdesk: map the contact again; a new id is worth a retry.
            await self._forget(customer)
            if await self._requester(customer) == gone:
                raise
            raise TemporaryFailure(f"the requester is gone in Freshdesk: {err}") from err

    async def _files(self, item: Item) -> tuple[list[tuple[str, str, bytes]], list[str]]:
        files: list[tuple[str, str, bytes]] = []
        left_out: list[str] = []
        total = 0
        for ref in item.attachments:
            got = await self._handle.attachment(ref.id)
            if got is None or total + len(got[1]) > MAX_UPLOAD:
                left_out.append(ref.filename)
                continue
            total += len(got[1])
            files.append((ref.filename, got[0] or ref.content_type, got[1]))
        return files, left_out

    def _body(self, item: Item, left_out: list[str]) -> str:
        """The HTML Freshdesk stores, ending with the event's marker."""
        content = nh3.clean(item.html) if item.html else _paragraphs(item.text)
        if not _plain(content).strip():
            content = "<p>(no text)</p>"
        lead = None
        if item.kind is ItemKind.AGENT:
            lead = (
                f"Sent to the customer by {item.author or 'an agent'} via helpline ({item.channel})"
            )
        elif item.kind is ItemKind.NOTE and item.author:
            lead = f"{item.author} (via helpline)"
        if lead:
            content = f"<p><em>{html.escape(lead)}:</em></p>{content}"
        if left_out:
            names = ", ".join(left_out)
            content += (
                f"<p><em>Not attached (not stored, or over 20 MB): {html.escape(names)}</em></p>"
            )
        return f"{content}\n{MARK.format(item.event_id)}"


def _requester_key(conversation_id: str) -> str:
    return f"requester:{conversation_id}"


def _marked(rows: list[dict[str, Any]], marker: str, conversation_id: str) -> list[str]:
    found = [r for r in rows if (r.get("custom_fields") or {}).get(marker) == conversation_id]
    found.sort(key=lambda r: (str(r.get("created_at") or ""), int(r["id"])))
    return [str(r["id"]) for r in found]


def _holder(body: Any) -> int | None:
    """The existing contact's id in a 409 duplicate_value answer (§6.4 ◐), external id first."""
    errors = (body or {}).get("errors") if isinstance(body, dict) else None
    ranked = sorted(errors or [], key=lambda e: e.get("field") != "unique_external_id")
    for error in ranked:
        uid = (error.get("additional_info") or {}).get("user_id")
        if isinstance(uid, int):
            return uid
    return None


def _names_a_missing_user(body: Any) -> bool:
    errors = body.get("errors") if isinstance(body, dict) else None
    return any(
        e.get("field") in ("requester_id", "user_id") and e.get("code") == "invalid_value"
        for e in errors or []
    )


def _names_only_the_secondary(body: Any) -> bool:
    """A merge refused only because secondary_contact_ids names no contact (§6.6 shape)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    return (
        isinstance(errors, list)
        and bool(errors)
        and all(
            isinstance(e, dict)
            and e.get("field") == "secondary_contact_ids"
            and e.get("code") == "invalid_value"
            for e in errors
        )
    )


def _next_link(answer: Answer) -> str | None:
    match = _NEXT.search(answer.headers.get("Link", ""))
    return match.group(1) if match else None


def _form(fields: dict[str, Any], files: list[tuple[str, str, bytes]]) -> aiohttp.FormData:
    """Freshdesk's multipart encoding: `tags[]` repeated, `custom_fields[cf_x]` nested."""
    form = aiohttp.FormData()
    for key, value in fields.items():
        if isinstance(value, list):
            for one in value:
                form.add_field(f"{key}[]", str(one))
        elif isinstance(value, dict):
            for sub, one in value.items():
                form.add_field(f"{key}[{sub}]", str(one))
        elif isinstance(value, bool):
            form.add_field(key, "true" if value else "false")
        else:
            form.add_field(key, str(value))
    for name, content_type, data in files:
        form.add_field("attachments[]", data, filename=name, content_type=content_type)
    return form


def _paragraphs(text: str) -> str:
    blocks = [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    return "".join(f"<p>{html.escape(b).replace(chr(10), '<br>')}</p>" for b in blocks)


def _plain(markup: str) -> str:
    return html.unescape(_TAG.sub(" ", markup))


def _words(text: str) -> str:
    return " ".join(text.split())
