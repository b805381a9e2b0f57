"""Chatwoot's Application API as the create-once protocol needs it (reference §7).

A helpline conversation is a Chatwoot conversation in an API-channel inbox: its
contact_inbox `source_id` is `hl_` + the conversation id, and its custom
attributes carry the conversation id (the marker a lookup matches), its number,
and the id of the event that opened it. Each message helpline posts carries its
event id (`evt_...`) as `source_id`, which is how a retry after an ambiguous
answer checks before posting again and how the webhook tells helpline's own
writes from an agent's.

The first message rides on the conversation create (one request, so a ticket
never shows empty), except a first message with files, which the create cannot
carry: that one is posted after it. Whenever a lookup finds the conversation
that the very event being delivered opened, it makes sure that event's message
is there too, so a create whose message post failed, or whose answer never
came, is completed by the next attempt instead of leaving an empty ticket.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import orjson
import structlog

from gateway.delivery.board import BackendHandle
from gateway.delivery.failures import AlreadyExists, PermanentFailure
from gateway.delivery.http import Answer, JsonClient
from gateway.delivery.items import Customer, Item, ItemKind
from gateway.store.delivery import Ref

E164 = re.compile(r"\A\+[1-9]\d{1,14}\Z")  # Chatwoot refuses other phone numbers (422)
MAX_CONTENT = 150_000  # Message validates content length (◐ seen in several versions)
MESSAGE_PAGES = 5  # pages of 20 read back when looking for an event's message
EVENT_PREFIX = "evt_"


def message_marker(event_id: str) -> str:
    """The `source_id` of the message an event becomes: the event id (evt_...)."""
    return event_id if event_id.startswith(EVENT_PREFIX) else EVENT_PREFIX + event_id


def conversation_source(conversation_id: str) -> str:
    """The contact_inbox `source_id` of a helpline conversation (hl_conv_...)."""
    return f"hl_{conversation_id}"


def contact_identifier(customer: Customer, conversation_id: str) -> str:
    """The contact's `identifier` (unique per account; hl_ct_...); a conversation without
    a known contact gets one of its own rather than sharing an anonymous contact."""
    if customer.contact_id:
        return f"hl_{customer.contact_id}"
    return f"hl_of_{conversation_id}"


CACHED_CONTACTS = 10_000


class ChatwootApi:
    """The five TicketApi calls, plus what the component's check and webhook need."""

    def __init__(
        self,
        client: JsonClient,
        handle: BackendHandle,
        log: structlog.stdlib.BoundLogger,
        *,
        inbox_id: int,
        marker: str,
        statuses: dict[str, str],
        api_user_id: int | None,
    ) -> None:
        self._http = client
        self._handle = handle
        self._log = log
        self._inbox = inbox_id
        self._marker = marker
        self._statuses = statuses
        self.api_user_id = api_user_id  # helpline's own Chatwoot user (loop prevention)
        self._contacts: dict[str, int] = {}  # helpline contact id -> Chatwoot contact id

    # -- start-up check ------------------------------------------------------
    async def inbox(self) -> dict[str, Any]:
        answer = await self._http.request("GET", f"/inboxes/{self._inbox}", allow=(404,))
        if answer.status == 404:
            raise PermanentFailure(
                f"no inbox {self._inbox} in this account (check account_id and inbox_id)",
                status=404,
            )
        return dict(answer.body or {})

    async def profile(self, url: str) -> int | None:
        """The token owner's user id (GET /api/v1/profile, outside the account prefix)."""
        answer = await self._http.request("GET", f"{url}/api/v1/profile", allow=(404,))
        body = answer.body if answer.status == 200 and isinstance(answer.body, dict) else {}
        user_id = body.get("id")
        return int(user_id) if isinstance(user_id, int) else None

    # -- TicketApi -----------------------------------------------------------
    async def find_tickets(self, item: Item) -> list[str]:
        customer = item.customer or await self._customer_of(item.conversation_id)
        found: dict[int, dict[str, Any]] = {}
        for contact in await self._known_contacts(customer, item.conversation_id):
            answer = await self._http.request(
                "GET", f"/contacts/{contact}/conversations", allow=(404,)
            )
            if answer.status == 404:
                continue
            for conv in _payload(answer.body):
                if self._ours(conv, item.conversation_id):
                    found[int(conv["id"])] = conv
        if not found:
            return []
        ids = sorted(found)
        oldest = found[ids[0]]
        attributes = oldest.get("custom_attributes") or {}
        if attributes.get("helpline_event") == item.event_id:
            # This event opened the ticket: finish that create (its message may be missing).
            await self._open(ids[0], item, check=True)
        if customer.contact_id and not await self._mapped(customer.contact_id):
            await self._remember(customer.contact_id, _contact_of(oldest))
        return [str(i) for i in ids]

    async def create_ticket(self, item: Item, customer: Customer) -> str:
        contact = await self._contact(customer, item.conversation_id)
        body: dict[str, Any] = {
            "source_id": conversation_source(item.conversation_id),
            "inbox_id": self._inbox,
            "contact_id": contact,
            "status": "open",
            "additional_attributes": {"mail_subject": item.title},
            "custom_attributes": {
                self._marker: item.conversation_id,
                "helpline_number": item.conversation_number,
                "helpline_event": item.event_id,
            },
        }
        files = await self._files(item)
        if item.kind is not ItemKind.STATUS and not files:
            # One request, so the ticket never shows without its first message. Files
            # cannot ride along (◐), so a first message with files is posted after.
            body["message"] = self._message(item)
        answer = await self._http.request("POST", "/conversations", json=body, allow=(422,))
        if answer.status == 422:
            # The source_id is held by another contact in this inbox: the conversation
            # exists already (made before the contact was re-resolved). Look it up.
            raise AlreadyExists(f"POST /conversations: {_error(answer)}", status=422)
        conv = answer.body or {}
        conv_id = int(conv["id"])
        # Stored once the ticket exists: until then the pending ticket row is the only
        # trace of an unanswered create, and the contact is found again by identifier.
        if customer.contact_id:
            await self._remember(customer.contact_id, contact)
        if "message" not in body:
            # An inbox with lock_to_single_conversation answers an existing conversation,
            # which may hold the message already; a new one holds none.
            await self._open(conv_id, item, check=bool(conv.get("messages")), files=files)
        return str(conv_id)

    async def add(self, ticket_id: str, item: Item, customer: Customer) -> None:
        await self._post(int(ticket_id), item)

    async def already_added(self, ticket_id: str, item: Item) -> bool:
        wanted = message_marker(item.event_id)
        before: int | None = None
        for _ in range(MESSAGE_PAGES):
            params = {"before": str(before)} if before is not None else None
            answer = await self._http.request(
                "GET", f"/conversations/{int(ticket_id)}/messages", params=params
            )
            messages = _payload(answer.body)
            if any(m.get("source_id") == wanted for m in messages):
                return True
            if len(messages) < 20:
                return False
            before = min(int(m["id"]) for m in messages)
        return False

    async def set_status(self, ticket_id: str, status: str) -> None:
        wanted = self._statuses.get(status, status)
        await self._http.request(
            "POST", f"/conversations/{int(ticket_id)}/toggle_status", json={"status": wanted}
        )

    # -- MergesUsers ------------------------------------------------------------
    async def merge_users(self, source: str, target: str) -> None:
        """POST /actions/contact_merge: the mergee's conversations, messages and
        contact_inboxes move to the base contact, and the mergee is deleted (§7.3).

        A repeated merge (the first answer was lost) finds no mergee: 404, the same answer
        as for a missing base or account, so it counts as done only when a read shows the
        base there and the mergee gone."""
        body = {"base_contact_id": int(target), "mergee_contact_id": int(source)}
        answer = await self._http.request("POST", "/actions/contact_merge", json=body, allow=(404,))
        if answer.status == 404:
            base = await self._http.request("GET", f"/contacts/{int(target)}", allow=(404,))
            mergee = await self._http.request("GET", f"/contacts/{int(source)}", allow=(404,))
            if base.status == 404 or mergee.status != 404:
                why = f"base contact {target} not found" if base.status == 404 else "not merged"
                raise PermanentFailure(
                    f"POST /actions/contact_merge: {_error(answer)} ({why})",
                    status=404,
                    body=answer.body,
                )
            self._log.info("backend.merge_already_done", source=source, target=target)
        for local, remote in list(self._contacts.items()):
            if remote == int(source):  # the mergee is gone: its helpline contacts go along
                self._contacts[local] = int(target)

    # -- contacts ------------------------------------------------------------
    async def _contact(self, customer: Customer, conversation_id: str) -> int:
        """The Chatwoot contact for a customer: known, made, or (on 422) found and adopted."""
        local = customer.contact_id
        if local and local in self._contacts:
            return self._contacts[local]
        if local:
            ref = await self._handle.ref("user", local)
            if ref is not None and ref.remote_id:
                return self._cache(local, int(ref.remote_id))
        identifier = contact_identifier(customer, conversation_id)
        body: dict[str, Any] = {
            "inbox_id": self._inbox,
            "name": customer.name or customer.email or customer.phone or "Customer",
            "identifier": identifier,
        }
        if customer.email:
            body["email"] = customer.email
        if customer.phone and E164.match(customer.phone):
            body["phone_number"] = customer.phone
        answer = await self._http.request("POST", "/contacts", json=body, allow=(422,))
        if answer.status == 200:
            made = ((answer.body or {}).get("payload") or {}).get("contact") or {}
            contact = int(made["id"])
            self._log.info("backend.contact_created", contact_id=local, remote=contact)
        else:
            taken = (answer.body or {}).get("attributes") or []
            contact = 0
            for key in ("identifier", "email", "phone_number"):
                if key in taken and body.get(key):
                    matches = await self._filter(key, str(body[key]))
                    if matches:
                        contact = matches[0]
                        break
            if not contact:
                raise PermanentFailure(f"POST /contacts: {_error(answer)}", status=422)
            self._log.info("backend.contact_adopted", contact_id=local, remote=contact, by=taken)
        if local:
            self._cache(local, contact)
        return contact

    def _cache(self, local: str, remote: int) -> int:
        """Cache a contact's Chatwoot id; bounded (the user map in the store has them all)."""
        if len(self._contacts) >= CACHED_CONTACTS:
            self._contacts.clear()
        self._contacts[local] = remote
        return remote

    async def _known_contacts(self, customer: Customer, conversation_id: str) -> list[int]:
        """Every Chatwoot contact the conversation's ticket may hang on (for a lookup)."""
        found: list[int] = []
        if customer.contact_id:
            ref = await self._handle.ref("user", customer.contact_id)
            if ref is not None and ref.remote_id:
                found.append(int(ref.remote_id))
        found += await self._filter("identifier", contact_identifier(customer, conversation_id))
        if customer.email:
            found += await self._filter("email", customer.email)
        if customer.phone and E164.match(customer.phone):
            found += await self._filter("phone_number", customer.phone)
        return list(dict.fromkeys(found))

    async def _filter(self, key: str, value: str) -> list[int]:
        condition = {
            "attribute_key": key,
            "filter_operator": "equal_to",
            "values": [value],
            "query_operator": None,
        }
        answer = await self._http.request(
            "POST", "/contacts/filter", json={"payload": [condition]}, allow=(422,)
        )
        found = _payload(answer.body)
        if answer.status == 422:
            # A version whose filter lacks this attribute (◐): the search matches it too,
            # as a substring, so only exact matches are kept.
            answer = await self._http.request("GET", "/contacts/search", params={"q": value})
            found = [
                c for c in _payload(answer.body) if str(c.get(key) or "").lower() == value.lower()
            ]
        return sorted(int(c["id"]) for c in found if c.get("id") is not None)

    async def _mapped(self, local: str) -> bool:
        """Whether the durable contact map holds this helpline contact."""
        ref = await self._handle.ref("user", local)
        return ref is not None and bool(ref.remote_id)

    async def _remember(self, local: str, remote: int) -> None:
        if not remote:
            return
        self._cache(local, remote)
        await self._handle.put_ref(Ref("user", local, str(remote), "created"))

    async def _customer_of(self, conversation_id: str) -> Customer:
        """The customer of a conversation whose item names none (an agent opened it)."""
        for raw in await self._handle.conversation_events(conversation_id):
            data = (orjson.loads(raw).get("data") or {}) if raw else {}
            if isinstance(data, dict) and data.get("contact_id"):
                return await self._handle.customer(str(data["contact_id"]))
        return Customer(contact_id="")

    # -- conversations and messages -------------------------------------------
    def _ours(self, conv: dict[str, Any], conversation_id: str) -> bool:
        if int(conv.get("inbox_id") or 0) != self._inbox:
            return False
        if (conv.get("custom_attributes") or {}).get(self._marker) == conversation_id:
            return True
        meta = conv.get("meta") or {}
        source = (meta.get("contact_inbox") or {}).get("source_id")
        return bool(source == conversation_source(conversation_id))

    async def _open(
        self,
        conv_id: int,
        item: Item,
        *,
        check: bool,
        files: list[tuple[str, str, bytes]] | None = None,
    ) -> None:
        """The opening item into a conversation that exists (a status item just sets it)."""
        if item.kind is ItemKind.STATUS:
            if item.status:
                await self.set_status(str(conv_id), item.status)
            return
        if check and await self.already_added(str(conv_id), item):
            return
        await self._post(conv_id, item, files)

    def _message(self, item: Item) -> dict[str, Any]:
        return {
            "content": _content(item),
            "message_type": "incoming" if item.kind is ItemKind.CUSTOMER else "outgoing",
            "private": item.kind is ItemKind.NOTE,
            "content_type": "text",
            "source_id": message_marker(item.event_id),
        }

    async def _post(
        self, conv_id: int, item: Item, files: list[tuple[str, str, bytes]] | None = None
    ) -> None:
        message = self._message(item)
        path = f"/conversations/{conv_id}/messages"
        files = await self._files(item) if files is None else files
        if files:
            form = aiohttp.FormData()
            form.add_field("content", message["content"])
            form.add_field("message_type", message["message_type"])
            form.add_field("private", "true" if message["private"] else "false")
            form.add_field("source_id", message["source_id"])
            for name, ctype, data in files:
                form.add_field("attachments[]", data, filename=name, content_type=ctype)
            answer = await self._http.request("POST", path, data=form)
        else:
            answer = await self._http.request("POST", path, json=message)
        self._learn_user(answer, message["message_type"])

    async def _files(self, item: Item) -> list[tuple[str, str, bytes]]:
        files = []
        for ref in item.attachments:
            held = await self._handle.attachment(ref.id)
            if held is None:
                self._log.warning("backend.attachment_missing", attachment=ref.id)
                continue
            files.append((ref.filename, held[0] or ref.content_type, held[1]))
        return files

    def _learn_user(self, answer: Answer, message_type: str) -> None:
        """helpline's own user id, from the sender of the outgoing messages it posts: the
        webhook's loop filter then holds even where /profile is not reachable."""
        if self.api_user_id is not None or message_type != "outgoing":
            return
        sender = (answer.body or {}).get("sender") if isinstance(answer.body, dict) else None
        if isinstance(sender, dict) and sender.get("type") == "user":
            user_id = sender.get("id")
            if isinstance(user_id, int):
                self.api_user_id = user_id
                self._log.info("backend.api_user_learned", user_id=user_id)


def _content(item: Item) -> str:
    text = item.text
    if not text.strip():
        text = "(attachments)" if item.attachments else "(no text)"
    if len(text) > MAX_CONTENT:
        text = text[: MAX_CONTENT - 40] + "\n\n[… truncated by helpline]"
    return text


def _payload(body: Any) -> list[dict[str, Any]]:
    """The list under `payload` (contacts/filter, conversations, messages)."""
    payload = body.get("payload") if isinstance(body, dict) else None
    return [p for p in payload if isinstance(p, dict)] if isinstance(payload, list) else []


def _contact_of(conv: dict[str, Any]) -> int:
    """The Chatwoot contact a conversation hangs on: `meta.sender` in the REST shape
    (conversations/partials/_conversation.json.jbuilder), `contact_id` where present."""
    sender = (conv.get("meta") or {}).get("sender")
    for found in (sender.get("id") if isinstance(sender, dict) else None, conv.get("contact_id")):
        if isinstance(found, int) and not isinstance(found, bool):
            return found
    return 0


def _error(answer: Answer) -> str:
    body = answer.body
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)[:300]
    return str(body)[:300]
