"""Request Tracker 5 through REST2: the ticket calls of the create-once protocol.

RT has no idempotency handle of its own, so helpline brings two custom fields:
a ticket CF holding the conversation id (found again with TicketSQL, which
reads the database synchronously) and a transaction CF holding each event's
id (found with TransactionSQL). RT drops an unknown custom field silently and
still creates the ticket, so no ticket is created before the queue is known
to carry both fields: a ticket without its marker could never be found again.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Mapping
from typing import Any

from gateway.delivery.board import BackendHandle
from gateway.delivery.failures import (
    AlreadyExists,
    PermanentFailure,
    TemporaryFailure,
    Unauthorized,
)
from gateway.delivery.http import JsonClient
from gateway.delivery.items import Customer, Item, ItemKind
from gateway.store.delivery import Ref

REST = "/REST/2.0"
PAGE = "100"  # REST2's largest page


def sql(value: str) -> str:
    """A value quoted for a single-quoted TicketSQL / TransactionSQL string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def rest_path(url: str) -> str:
    """A REST2 URL or Location as a path under /REST/2.0 (RT's own base URL may differ
    from the one helpline reaches it by, behind a proxy)."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path
    at = path.find(REST)
    path = path[at + len(REST) :] if at >= 0 else path
    return path + (f"?{parts.query}" if parts.query else "")


class RtApi:
    """The TicketApi of one RT queue, as one API user."""

    def __init__(
        self,
        client: JsonClient,
        handle: BackendHandle,
        *,
        queue: str,
        ticket_cf: str,
        event_cf: str,
        statuses: Mapping[str, str],
    ) -> None:
        self.client = client
        self._handle = handle
        self.queue = queue
        self.ticket_cf = ticket_cf
        self.event_cf = event_cf
        self._statuses = dict(statuses)
        self._fields_ok = False

    # -- reading -------------------------------------------------------------
    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return (await self.client.request("GET", REST + path, params=params)).body

    async def search(self, collection: str, query: str, **params: str) -> list[dict[str, Any]]:
        """Every item of /tickets or /transactions matching a query, page by page."""
        return await self.collection(f"/{collection}", query=query, **params)

    async def collection(self, path: str, **params: str) -> list[dict[str, Any]]:
        """Every item of a REST2 collection, following next_page."""
        found: list[dict[str, Any]] = []
        at: str | None = path
        args: dict[str, str] | None = {"per_page": PAGE, **params}
        while at:
            page = await self.get(at, args)
            found.extend(page.get("items") or [])
            following = page.get("next_page")
            at, args = (rest_path(following), None) if following else (None, None)
        return found

    async def check_fields(self) -> dict[str, Any]:
        """The queue, once it is known to carry both of helpline's custom fields; else a
        failure that says which one to create (docs/backends/rt.md)."""
        quoted = urllib.parse.quote(self.queue, safe="")
        answer = await self.client.request("GET", f"{REST}/queue/{quoted}", allow=(404,))
        if answer.status == 404:
            raise TemporaryFailure(
                f"RT has no queue {self.queue!r} (or the API user cannot see it)"
            )
        queue: dict[str, Any] = answer.body
        missing = []
        for key, name, applies in (
            ("TicketCustomFields", self.ticket_cf, "tickets"),
            ("TicketTransactionCustomFields", self.event_cf, "ticket transactions"),
        ):
            names = [cf.get("name") for cf in queue.get(key) or []]
            if name not in names:
                missing.append(f"{name!r} (a custom field for {applies})")
        if missing:
            raise TemporaryFailure(
                f"queue {self.queue!r} has no custom field {' and no '.join(missing)}: "
                "create it and apply it to the queue, or the API user lacks SeeCustomField"
            )
        self._fields_ok = True
        return queue

    # -- TicketApi -------------------------------------------------------------
    async def find_tickets(self, item: Item) -> list[str]:
        query = f"'CF.{{{self.ticket_cf}}}' = {sql(item.conversation_id)}"
        items = await self.search("tickets", query, orderby="id", order="ASC")
        return [str(t["id"]) for t in items]

    async def create_ticket(self, item: Item, customer: Customer) -> str:
        if not self._fields_ok:
            await self.check_fields()  # never a ticket without its marker
        body: dict[str, Any] = {
            "Queue": self.queue,
            "Subject": item.title,
            "CustomFields": {self.ticket_cf: item.conversation_id},
            **await self._message(item),
        }
        requestor = await self.requestor(customer)
        if requestor:
            body["Requestor"] = requestor
        answer = await self.client.request("POST", REST + "/ticket", json=body)
        ticket = (answer.body or {}).get("id") if isinstance(answer.body, dict) else None
        if ticket is None:
            where = answer.headers.get("Location", "")
            if "/ticket/" not in where:
                raise TemporaryFailure(
                    f"RT answered {answer.status} to a create without a ticket id",
                    ambiguous=True,
                )
            ticket = where.rstrip("/").rsplit("/", 1)[1]
        return str(ticket)

    async def add(self, ticket_id: str, item: Item, customer: Customer) -> None:
        # REST2 cannot write as somebody else: the customer's words and an agent's
        # answer made elsewhere are both correspondence by the API user.
        kind = "comment" if item.kind is ItemKind.NOTE else "correspond"
        body = await self._message(item)
        body["TxnCustomFields"] = {self.event_cf: item.event_id}
        if item.kind is ItemKind.CUSTOMER:  # who wrote, and on which channel, in the history
            who = item.customer.label if item.customer else "the customer"
            body["Subject"] = f"{who} via {item.channel}" + (
                f": {item.subject}" if item.subject else ""
            )
        await self.client.request("POST", f"{REST}/ticket/{ticket_id}/{kind}", json=body)

    async def already_added(self, ticket_id: str, item: Item) -> bool:
        query = (
            f"ObjectType = 'RT::Ticket' AND ObjectId = {int(ticket_id)} "
            f"AND 'CF.{{{self.event_cf}}}' = {sql(item.event_id)}"
        )
        return bool(await self.search("transactions", query))

    async def set_status(self, ticket_id: str, status: str) -> None:
        wanted = self._statuses.get(status, "")
        if not wanted:
            return  # the operator keeps RT's status apart from helpline's
        answer = await self.client.request(
            "PUT", f"{REST}/ticket/{ticket_id}", json={"Status": wanted}
        )
        # RT answers 200 with a list of messages, also when it refused the change.
        for line in answer.body if isinstance(answer.body, list) else []:
            if "isn't a valid status" in str(line) or "Permission Denied" in str(line):
                raise PermanentFailure(f"RT refused status {wanted!r}: {line}", body=answer.body)

    # -- parts of requests -------------------------------------------------------
    async def _message(self, item: Item) -> dict[str, Any]:
        """Content, type and files of an item, as REST2 takes them on create and reply."""
        if item.text.strip() or not item.html:
            body: dict[str, Any] = {
                "Content": item.text or "(no text)",
                "ContentType": "text/plain",
            }
        else:
            body = {"Content": item.html, "ContentType": "text/html"}
        files = []
        for ref in item.attachments:
            stored = await self._handle.attachment(ref.id)
            if stored is None:
                continue  # erased or expired meanwhile: the text still goes
            content_type, data = stored
            files.append(
                {
                    "FileName": ref.filename,
                    "FileType": ref.content_type or content_type,
                    "FileContent": base64.b64encode(data).decode(),
                }
            )
        if files:
            body["Attachments"] = files
        return body

    async def requestor(self, customer: Customer) -> str | None:
        """Who the ticket is for: an email address (RT makes the user), else an RT user
        named hl-<contact id> that helpline creates once (RT cannot search users by phone)."""
        if customer.email:
            return customer.email
        if not customer.contact_id:
            return None
        known = await self._handle.ref("user", customer.contact_id)
        if known is not None and known.remote_id:
            return known.remote_id
        name = f"hl-{customer.contact_id}"
        fields = {"Name": name, "RealName": customer.name or customer.phone or name}
        if customer.phone:
            fields["MobilePhone"] = customer.phone
        try:
            answer = await self.client.request("POST", REST + "/user", json=fields, allow=(400,))
        except AlreadyExists:
            answer = None
        except Unauthorized as err:
            if err.status != 403:
                raise
            # Without AdminUsers the ticket still gets made, only without a requestor.
            return None
        if answer is not None and answer.status == 400:
            message = (
                str((answer.body or {}).get("message", "")) if isinstance(answer.body, dict) else ""
            )
            if "in use" not in message:
                raise PermanentFailure(
                    f"RT refused user {name!r}: {message}", status=400, body=answer.body
                )
        await self._handle.put_ref(Ref("user", customer.contact_id, name, "created"))
        return name
