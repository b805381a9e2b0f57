"""Zammad's REST API as the create-once protocol needs it (reference/backends.md §4).

Zammad has no idempotency key and no native external id, so each ticket
carries helpline's conversation id in a ticket attribute the admin creates
(default `helpline_cid`), and the lookup is the `condition` ticket search: it
runs as SQL on the database, so a ticket committed a moment ago is found, where
the plain `query` search waits for the asynchronous search index. Each article
helpline writes carries `<EVENT_ID@helpline>` as its `message_id`, the
per-event marker a retry checks before posting again, and the mark the
webhook uses to recognise helpline's own writes.

Customers: an email is handed to Zammad as `guess:<email>` (find or create);
anyone else (a phone-only caller, a chat visitor) becomes a Zammad user made
here, and the contact → user id map is kept (`ref("user", contact_id)`), since
Zammad's user search does not look at phone numbers without Elasticsearch.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import structlog

from gateway.delivery.board import BackendHandle
from gateway.delivery.failures import PermanentFailure, TemporaryFailure
from gateway.delivery.http import JsonClient
from gateway.delivery.items import Customer, Item, ItemKind
from gateway.store.delivery import Ref

MARK_DOMAIN = "helpline"
# Article types by the channel a customer wrote on; anything else is "web". Never "email":
# an email-type article is one Zammad may send itself.
CUSTOMER_TYPES = {"phone": "phone", "chat": "chat", "sms": "sms"}


def marker(event_id: str) -> str:
    """The article `message_id` for one helpline event."""
    return f"<{event_id}@{MARK_DOMAIN}>"


def is_marked(message_id: Any) -> bool:
    """Whether an article's `message_id` is one helpline wrote."""
    return isinstance(message_id, str) and message_id.endswith(f"@{MARK_DOMAIN}>")


class ZammadApi:
    """The TicketApi (gateway/delivery/tickets.py) over one Zammad, plus what check and the
    webhook need: who helpline is, and an article's attachment bytes."""

    def __init__(
        self,
        base_url: str,
        token: str,
        handle: BackendHandle,
        log: structlog.stdlib.BoundLogger,
        *,
        timeout: float,
        group: str,
        attribute: str,
        states: Mapping[str, str],
        tags: list[str],
    ) -> None:
        self.base = base_url.rstrip("/") + "/api/v1"
        auth = {"Authorization": f"Token token={token}"}
        self.http = JsonClient(self.base, headers=auth, timeout=timeout)
        self._handle = handle
        self._log = log
        self.group = group
        self.attribute = attribute
        self._states = dict(states)
        self._tags = ",".join(tags)
        self.me: dict[str, Any] | None = None
        self._attribute_ok = False  # the marker attribute was seen to exist

    async def close(self) -> None:
        await self.http.close()

    # -- who helpline is, and whether the marker attribute exists ---------------
    async def whoami(self) -> dict[str, Any]:
        """GET /users/me, kept: its id is how the webhook tells helpline's own articles."""
        if self.me is None:
            answer = await self.http.request("GET", "/users/me")
            if not isinstance(answer.body, dict) or "id" not in answer.body:
                raise TemporaryFailure(f"GET /users/me: unexpected answer {answer.body!r:.200}")
            self.me = answer.body
        return self.me

    async def check_attribute(self) -> None:
        """A condition search on the marker: Zammad answers 422 (an SQL error) when the
        ticket attribute does not exist, and then drops it silently from every create, so
        no ticket is created before this has passed once."""
        try:
            await self._search("helpline-start-up-check", limit=1)
        except PermanentFailure as err:
            if err.status != 422:
                raise
            # Temporary: the configuration is wrong, not an event; everything waits for it.
            raise TemporaryFailure(
                f"the ticket attribute {self.attribute!r} does not exist in Zammad (create it "
                f"in Admin > Objects > Ticket, then restart Zammad): {err}",
                status=err.status,
                body=err.body,
            ) from err
        self._attribute_ok = True

    # -- TicketApi ---------------------------------------------------------------
    async def find_tickets(self, item: Item) -> list[str]:
        return await self._search(item.conversation_id, limit=50)

    async def _search(self, conversation_id: str, *, limit: int) -> list[str]:
        condition = {f"ticket.{self.attribute}": {"operator": "is", "value": conversation_id}}
        answer = await self.http.request(
            "POST", "/tickets/search", json={"condition": condition, "limit": limit}
        )
        body = answer.body if isinstance(answer.body, dict) else {}
        assets = (body.get("assets") or {}).get("Ticket") or {}
        found = []
        for tid in body.get("tickets") or []:
            shown = assets.get(str(tid))
            # the selector is exact; the check guards against a Zammad that ignored it
            if isinstance(shown, dict) and shown.get(self.attribute) not in (None, conversation_id):
                continue
            found.append(int(tid))
        return [str(tid) for tid in sorted(found)]  # ids grow: oldest first

    async def create_ticket(self, item: Item, customer: Customer) -> str:
        if not self._attribute_ok:  # a ticket without the marker could be created twice
            await self.check_attribute()
        who = await self._known_user(customer)
        guessed = who is None and bool(customer.email)
        if who is None and not customer.email:
            who = await self._new_user(customer)
        try:
            ticket = await self._create(item, customer, who if who else f"guess:{customer.email}")
        except PermanentFailure as err:
            # Zammad refuses an address it finds invalid for `guess:`: make the user without it.
            if not (guessed and err.status == 422 and "of customer" in str(err)):
                raise
            name = customer.name or customer.email
            user = await self._new_user(Customer(customer.contact_id, None, customer.phone, name))
            ticket = await self._create(item, customer, user)
        if guessed and customer.contact_id and ticket.get("customer_id"):
            await self._remember(customer.contact_id, int(ticket["customer_id"]))
        if ticket.get(self.attribute) != item.conversation_id:
            self._log.error(
                "backend.marker_dropped",
                ticket=ticket.get("id"),
                attribute=self.attribute,
                hint="Zammad dropped helpline's ticket attribute: create it (see docs)",
            )
        return str(ticket["id"])

    async def _create(self, item: Item, customer: Customer, who: int | str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "title": item.title,
            "group": self.group,
            "customer_id": who,
            self.attribute: item.conversation_id,
            "article": await self._article(item, customer, who if isinstance(who, int) else None),
        }
        if self._tags:
            body["tags"] = self._tags
        answer = await self.http.request("POST", "/tickets", json=body)
        if not isinstance(answer.body, dict) or "id" not in answer.body:
            raise TemporaryFailure(
                f"POST /tickets: no ticket in the answer ({answer.body!r:.200})", ambiguous=True
            )
        return answer.body

    async def add(self, ticket_id: str, item: Item, customer: Customer) -> None:
        origin = None
        if item.kind is ItemKind.CUSTOMER and item.customer is not None:
            origin = await self._user(item.customer)
        article = await self._article(item, item.customer or customer, origin)
        article["ticket_id"] = int(ticket_id)
        await self.http.request("POST", "/ticket_articles", json=article)

    async def already_added(self, ticket_id: str, item: Item) -> bool:
        answer = await self.http.request("GET", f"/ticket_articles/by_ticket/{int(ticket_id)}")
        mark = marker(item.event_id)
        articles = answer.body if isinstance(answer.body, list) else []
        return any(isinstance(a, dict) and a.get("message_id") == mark for a in articles)

    async def set_status(self, ticket_id: str, status: str) -> None:
        state = self._states.get(status)
        if not state:
            return  # configured to leave the ticket's state alone
        await self.http.request("PUT", f"/tickets/{int(ticket_id)}", json={"state": state})

    # -- articles ------------------------------------------------------------------
    async def _article(self, item: Item, customer: Customer, origin: int | None) -> dict[str, Any]:
        """The article for an item: a customer's message, an agent's public answer made
        elsewhere (a public note: type email would have Zammad mail the customer itself),
        or an internal note."""
        article: dict[str, Any] = {
            "body": item.html or item.text,
            "content_type": "text/html" if item.html else "text/plain",
            "message_id": marker(item.event_id),
        }
        if item.kind is ItemKind.CUSTOMER:
            article |= {
                "sender": "Customer",
                "type": CUSTOMER_TYPES.get(item.channel, "web"),
                "internal": False,
                "from": _address(customer),
            }
            if origin is not None:
                article["origin_by_id"] = origin
        else:
            public = item.kind is ItemKind.AGENT
            article |= {"sender": "Agent", "type": "note", "internal": not public}
            if item.author:
                article["from"] = item.author
        if item.subject:
            article["subject"] = item.subject
        files = []
        for ref in item.attachments:
            held = await self._handle.attachment(ref.id)
            if held is None:  # erased since, or never stored: the message goes without it
                self._log.info("backend.attachment_missing", attachment=ref.id)
                continue
            content_type, data = held
            files.append(
                {
                    "filename": ref.filename,
                    "mime-type": content_type or ref.content_type,
                    "data": base64.b64encode(data).decode("ascii"),
                }
            )
        if files:
            article["attachments"] = files
        return article

    async def download(self, ticket_id: int, article_id: int, file_id: int, limit: int) -> bytes:
        """An attachment's bytes; the path is built from ids, never taken from the payload,
        so helpline's token only ever goes to the configured Zammad."""
        url = f"{self.base}/ticket_attachment/{ticket_id}/{article_id}/{file_id}"
        return await self.http.download(url, limit=limit)

    # -- users -------------------------------------------------------------------
    async def _user(self, customer: Customer) -> int | None:
        """The Zammad user for a contact: remembered, found by exact email, or made."""
        known = await self._known_user(customer)
        if known is not None:
            return known
        if not (customer.email or customer.phone or customer.name):
            return None  # nothing to know them by: Zammad puts the ticket's customer
        found = await self._find_user(customer.email) if customer.email else None
        if found is None:
            return await self._new_user(customer)
        await self._remember(customer.contact_id, found)
        return found

    async def _known_user(self, customer: Customer) -> int | None:
        if not customer.contact_id:
            return None
        ref = await self._handle.ref("user", customer.contact_id)
        return int(ref.remote_id) if ref is not None and ref.remote_id else None

    async def _remember(self, contact_id: str, user_id: int) -> None:
        if contact_id:
            await self._handle.put_ref(Ref("user", contact_id, str(user_id), "created"))

    async def _find_user(self, email: str) -> int | None:
        """Users search is a substring match (SQL LIKE, or the index): filter exactly."""
        answer = await self.http.request(
            "GET", "/users/search", params={"query": email, "limit": "50"}
        )
        for user in answer.body if isinstance(answer.body, list) else []:
            if isinstance(user, dict) and str(user.get("email") or "").lower() == email.lower():
                return int(user["id"])
        return None

    async def _new_user(self, customer: Customer) -> int:
        first, _, last = (customer.name or "").strip().rpartition(" ")
        first, last = (first, last) if first else (last, "")
        if not (first or customer.email or customer.phone):
            first = f"helpline contact {customer.contact_id or '(unknown)'}"
        body = {
            "firstname": first,
            "lastname": last,
            "email": customer.email or "",
            "phone": customer.phone or "",
            "note": f"helpline contact {customer.contact_id}" if customer.contact_id else "",
            "roles": ["Customer"],  # honoured for admins; agents get the signup role anyway
        }
        try:
            answer = await self.http.request("POST", "/users", json=body)
        except PermanentFailure as err:
            if err.status != 422 or not customer.email:
                raise
            # made meanwhile by a `guess:` or another lane: the address is taken, find it
            found = await self._find_user(customer.email)
            if found is None:  # an address Zammad refuses: the user goes without it
                name = customer.name or customer.email
                return await self._new_user(
                    Customer(customer.contact_id, None, customer.phone, name)
                )
            await self._remember(customer.contact_id, found)
            return found
        if not isinstance(answer.body, dict) or "id" not in answer.body:
            raise TemporaryFailure(f"POST /users: no user in the answer ({answer.body!r:.200})")
        uid = int(answer.body["id"])
        await self._remember(customer.contact_id, uid)
        self._log.info("backend.user_created", user=uid, contact_id=customer.contact_id)
        return uid


def _address(customer: Customer) -> str:
    if customer.email:
        return f"{customer.name} <{customer.email}>" if customer.name else customer.email
    return customer.label
