"""The REST2 facts of Request Tracker 5 that the rt backend relies on, checked on the real RT.

One private RT (tests/rt.py) serves the module. Every call is a plain aiohttp
request, so a new RT version that changes a status code, a body shape or a
query language detail fails here first, not in the backend's tests.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiohttp
import pytest

from tests.rt import (
    CONVERSATION_CF,
    EVENT_CF,
    QUEUE,
    PrivateRT,
    need_rt,
    silence_requestors_initialdata,
    start_rt,
)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR-not-really"


@pytest.fixture(scope="module")
def rt() -> Iterator[PrivateRT]:
    need_rt()
    server = start_rt()
    try:
        yield server
    finally:
        server.stop()


class Api:
    """aiohttp calls to REST2 as root with the auth token, the way the backend will talk."""

    def __init__(self, rt: PrivateRT, session: aiohttp.ClientSession) -> None:
        self.rt = rt
        self.session = session
        self.headers = {"Authorization": f"token {rt.token}"}

    async def call(
        self, method: str, path: str, body: Any = None, **kw: Any
    ) -> tuple[int, Any, Mapping[str, str]]:
        headers = {**self.headers, **kw.pop("headers", {})}
        async with self.session.request(
            method, self.rt.rest + path, json=body, headers=headers, **kw
        ) as answer:
            data = await answer.json(content_type=None) if answer.status != 302 else None
            return answer.status, data, answer.headers

    async def ok(self, method: str, path: str, body: Any = None, want: int = 200) -> Any:
        status, data, _ = await self.call(method, path, body)
        assert status == want, (method, path, status, data)
        return data

    async def search(self, collection: str, query: str, **params: str) -> list[dict[str, Any]]:
        url = f"/{collection}?" + urllib.parse.urlencode({"query": query, **params})
        answer = await self.ok("GET", url)
        return list(answer["items"])

    async def create_ticket(self, **fields: Any) -> str:
        body = {"Queue": QUEUE, "Subject": "printer on fire", "ContentType": "text/plain"}
        body["Content"] = "It is still burning."
        body.update(fields)
        status, data, headers = await self.call("POST", "/ticket", body)
        assert status == 201, data
        assert headers["Location"] == f"/REST/2.0/ticket/{data['id']}"
        return str(data["id"])


@pytest.fixture
async def api(rt: PrivateRT) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield Api(rt, session)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def mails_to(rt: PrivateRT, address: str) -> list[email.message.EmailMessage]:
    found = []
    for raw in rt.mails():
        msg = email.message_from_string(raw, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        if address in str(msg.get("To", "")) + str(msg.get("Cc", "")) + str(msg.get("Bcc", "")):
            found.append(msg)
    return found


async def wait_mails(rt: PrivateRT, address: str, count: int) -> list[email.message.EmailMessage]:
    """RT sends while it handles the request; wait a little anyway (bounded)."""
    deadline = time.monotonic() + 3
    while len(found := mails_to(rt, address)) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return found


# -- tickets ---------------------------------------------------------------------


async def test_create_ticket_with_conversation_cf_and_find_it(api: Api) -> None:
    conv = unique("conv")
    status, data, headers = await api.call(
        "POST",
        "/ticket",
        {
            "Queue": QUEUE,
            "Subject": "printer on fire",
            "Requestor": f"{conv}@example.org",
            "Content": "It is still burning.",
            "ContentType": "text/plain",
            "CustomFields": {CONVERSATION_CF: conv},
        },
    )
    assert status == 201
    assert set(data) == {"id", "type", "_url"} and data["type"] == "ticket"
    assert isinstance(data["id"], str) and data["id"].isdigit()  # a string on create ...
    assert headers["Location"] == f"/REST/2.0/ticket/{data['id']}"  # relative, no host
    ticket = await api.ok("GET", f"/ticket/{data['id']}")
    assert ticket["id"] == int(data["id"])  # ... but a number in GET /ticket/{id}
    assert ticket["Status"] == "new"
    assert ticket["Requestor"][0]["id"] == f"{conv}@example.org"
    cf = [c for c in ticket["CustomFields"] if c["name"] == CONVERSATION_CF]
    assert cf and cf[0]["values"] == [conv]

    items = await api.search("tickets", f"'CF.{{{CONVERSATION_CF}}}' = '{conv}'")
    assert [item["id"] for item in items] == [data["id"]]
    assert await api.search("tickets", f"'CF.{{{CONVERSATION_CF}}}' = '{conv}-other'") == []
    assert api.rt.tickets_with_conversation(conv) == [int(data["id"])]


async def test_unknown_cf_on_create_is_dropped_silently(api: Api) -> None:
    conv = unique("conv")
    fields = {CONVERSATION_CF: conv, "No-Such-Field": "x"}
    ticket_id = await api.create_ticket(CustomFields=fields)
    ticket = await api.ok("GET", f"/ticket/{ticket_id}")
    assert [c["name"] for c in ticket["CustomFields"]] == [CONVERSATION_CF]
    assert "Custom field No-Such-Field not found" in api.rt.log()


async def test_create_errors_are_json_messages(api: Api) -> None:
    status, data, _ = await api.call("POST", "/ticket", {"Subject": "no queue"})
    assert (status, data) == (400, {"message": "Could not create ticket. Queue not set"})
    status, data, _ = await api.call("GET", "/ticket/999999")
    assert (status, data) == (404, {"message": "Not Found"})
    status, data, _ = await api.call("GET", "/tickets?query=" + urllib.parse.quote("Bogus ==="))
    assert status == 400 and data["message"].startswith("Wrong query")


# -- messages with an event marker ---------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "added"), [("correspond", "Correspondence added"), ("comment", "Comments added")]
)
async def test_message_with_event_cf_and_attachment(api: Api, kind: str, added: str) -> None:
    ticket_id = await api.create_ticket(CustomFields={CONVERSATION_CF: unique("conv")})
    event = unique("evt")
    body = {
        "Content": f"helpline {kind}",
        "ContentType": "text/plain",
        "TxnCustomFields": {EVENT_CF: event},
        "Attachments": [{"FileName": "shot.png", "FileType": "image/png", "FileContent": b64(PNG)}],
    }
    status, data, headers = await api.call("POST", f"/ticket/{ticket_id}/{kind}", body)
    assert status == 201
    assert data == [added, "Custom fields updated"]
    location = headers["Location"]
    assert location.startswith("/REST/2.0/transaction/")  # relative, no host
    txn_id = location.rsplit("/", 1)[1]

    query = (
        f"ObjectType = 'RT::Ticket' AND ObjectId = {ticket_id} AND 'CF.{{{EVENT_CF}}}' = '{event}'"
    )
    assert [t["id"] for t in await api.search("transactions", query)] == [txn_id]
    other = query.replace(event, event + "-x")
    assert await api.search("transactions", other) == []

    txn = await api.ok("GET", f"/transaction/{txn_id}")
    assert txn["Type"] == kind.capitalize()
    assert txn["Creator"]["id"] == "root"
    assert txn["Object"] == {
        "type": "ticket",
        "id": ticket_id,
        "_url": api.rt.rest + f"/ticket/{ticket_id}",
    }
    cf = [c for c in txn["CustomFields"] if c["name"] == EVENT_CF]
    assert cf[0]["values"] == [event]


async def test_message_needs_content_type(api: Api) -> None:
    ticket_id = await api.create_ticket()
    status, data, _ = await api.call("POST", f"/ticket/{ticket_id}/correspond", {"Content": "x"})
    assert status == 400 and "ContentType" in data["message"]


# -- agent replies back to helpline ------------------------------------------------


async def test_poll_agent_replies_and_read_body_and_files(api: Api) -> None:
    rt = api.rt
    ticket_id = await api.create_ticket(CustomFields={CONVERSATION_CF: unique("conv")})
    newest = await api.search("transactions", "id > 0", orderby="id", order="DESC", per_page="1")
    cursor = int(newest[0]["id"])

    await api.ok(
        "POST",
        f"/ticket/{ticket_id}/correspond",
        {"Content": "from helpline", "ContentType": "text/plain"},
        want=201,
    )
    pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3 not really\n"
    agent_txn = await asyncio.to_thread(
        rt.agent_correspond,
        ticket_id,
        "Agent answer: try turning it off.",
        [("manual.pdf", "application/pdf", pdf), ("photo.png", "image/png", PNG)],
    )
    await asyncio.to_thread(rt.agent_comment, ticket_id, "internal: customer is grumpy")

    query = (
        f"Type = 'Correspond' AND ObjectType = 'RT::Ticket' AND Creator != 'root' AND id > {cursor}"
    )
    params = {"orderby": "id", "order": "ASC", "per_page": "100"}
    found, root = await asyncio.gather(
        api.search("transactions", query, **params), api.ok("GET", "/user/root")
    )
    assert [t["id"] for t in found] == [str(agent_txn)]
    # Creator compares by user id as well as by name; `fields` expands the poll answer
    # (no extra GET per transaction for these).
    by_id, wide = await asyncio.gather(
        api.search("transactions", query.replace("'root'", str(root["id"])), **params),
        api.search("transactions", query, fields="Type,Creator,ObjectId,ObjectType", **params),
    )
    assert [t["id"] for t in by_id] == [str(agent_txn)]
    assert wide[0]["ObjectId"] == ticket_id and wide[0]["ObjectType"] == "RT::Ticket"
    assert wide[0]["Creator"]["id"] == rt.agent and wide[0]["Type"] == "Correspond"

    txn = await api.ok("GET", f"/transaction/{agent_txn}")
    assert txn["Creator"]["id"] == rt.agent
    links = [h["_url"] for h in txn["_hyperlinks"] if h["ref"] == "attachment"]
    assert len(links) == 4  # multipart/mixed container, text/plain body, two files

    paths = [urllib.parse.urlsplit(u).path.removeprefix("/REST/2.0") for u in links]
    parts = await asyncio.gather(*(api.ok("GET", path) for path in paths))  # RT has 2 workers
    container, body, *files = parts
    assert container["ContentType"] == "multipart/mixed" and container["Content"] is None
    assert container["Parent"] == "0"
    assert body["ContentType"] == "text/plain" and "Filename" not in body
    assert body["Parent"]["id"] == str(container["id"])
    assert base64.b64decode(body["Content"]) == b"Agent answer: try turning it off."
    assert "Content-Disposition: inline\n" in body["Headers"] + "\n"
    assert [(f["Filename"], f["ContentType"]) for f in files] == [
        ("manual.pdf", "application/pdf"),
        ("photo.png", "image/png"),
    ]
    assert [base64.b64decode(f["Content"]) for f in files] == [pdf, PNG]
    # Files sent through REST2 are marked inline too: tell them apart by Filename, not disposition.
    assert 'Content-Disposition: inline; filename="manual.pdf"' in files[0]["Headers"]

    # One call lists the parts with names and types (Content there is NOT base64; use
    # GET /attachment/{id} for bytes). Asking for fields=Parent here is a 500 on 5.0.3.
    listed = await api.ok(
        "GET", f"/transaction/{agent_txn}/attachments?fields=Filename,ContentType,ContentLength"
    )
    assert [(a["ContentType"], a["Filename"]) for a in listed["items"]] == [
        ("multipart/mixed", ""),
        ("text/plain", ""),
        ("application/pdf", "manual.pdf"),
        ("image/png", "photo.png"),
    ]


async def test_history_shows_who_did_what(api: Api) -> None:
    rt = api.rt
    ticket_id = await api.create_ticket()
    await asyncio.to_thread(rt.agent_correspond, ticket_id, "hello from the agent")
    history = await asyncio.to_thread(rt.history, ticket_id)
    reply = next(t for t in history if t["Type"] == "Correspond")
    # A reply without files is ONE text/plain part: no multipart container around it.
    parts = await api.ok(
        "GET", f"/transaction/{reply['id']}/attachments?fields=ContentType,Filename"
    )
    [only] = parts["items"]
    assert (only["ContentType"], only["Filename"]) == ("text/plain", "")
    body = await api.ok("GET", f"/attachment/{only['id']}")
    assert body["Parent"] == "0" and base64.b64decode(body["Content"]) == b"hello from the agent"
    kinds = [(t["Type"], t["Creator"]["Name"]) for t in history]
    assert kinds[0] == ("Create", "root")
    assert ("Correspond", rt.agent) in kinds
    # A reply to a new ticket opens it: done by a scrip, so the Creator is RT_System.
    assert ("Status", "RT_System") in kinds


async def test_queue_shows_helplines_custom_fields(api: Api) -> None:
    """What a backend can check at start-up: both CFs exist and apply to the queue."""
    queue = await api.ok("GET", f"/queue/{QUEUE}")  # by name works here ...
    assert [c["name"] for c in queue["TicketCustomFields"]] == [CONVERSATION_CF]
    assert [c["name"] for c in queue["TicketTransactionCustomFields"]] == [EVENT_CF]
    status, _, _ = await api.call("GET", f"/queue/{QUEUE}/customfields")
    assert status == 404  # ... but not for the sub-collection: use the numeric id
    listed = await api.ok("GET", f"/queue/{queue['id']}/customfields?fields=Name,LookupType")
    assert {(c["Name"], c["LookupType"]) for c in listed["items"]} == {
        (CONVERSATION_CF, "RT::Queue-RT::Ticket"),
        (EVENT_CF, "RT::Queue-RT::Ticket-RT::Transaction"),
    }


# -- status ------------------------------------------------------------------------


async def test_resolve_and_reopen(api: Api) -> None:
    ticket_id = await api.create_ticket()
    for old, new in (("new", "resolved"), ("resolved", "open")):
        data = await api.ok("PUT", f"/ticket/{ticket_id}", {"Status": new})
        assert data == [f"Ticket {ticket_id}: Status changed from '{old}' to '{new}'"]
        assert (await api.ok("GET", f"/ticket/{ticket_id}"))["Status"] == new
    # An invalid status is NOT an HTTP error: 200 with a message, status unchanged.
    data = await api.ok("PUT", f"/ticket/{ticket_id}", {"Status": "bogus"})
    assert data == [f"Ticket {ticket_id}: Status 'bogus' isn't a valid status for this ticket."]
    assert (await api.ok("GET", f"/ticket/{ticket_id}"))["Status"] == "open"


# -- auth ---------------------------------------------------------------------------


async def test_auth_token_basic_401_and_302_for_browsers(api: Api) -> None:
    rt = api.rt
    info = await api.ok("GET", "/rt")
    assert info["Version"].startswith("5.")
    session = api.session
    async with session.get(rt.rest + "/rt", headers={"Authorization": "token 1-14-0bad"}) as a:
        assert a.status == 401
        assert a.headers["Content-Type"].startswith("application/json")
        assert await a.json() == {"message": "Unauthorized"}
    async with session.get(rt.rest + "/rt") as a:
        assert a.status == 401
    async with session.get(rt.rest + f"/rt?token={rt.token}") as a:
        assert a.status == 200
    for password, want in ((rt.agent_password, 200), ("wrong", 401)):
        basic = {"Authorization": "Basic " + b64(f"{rt.agent}:{password}".encode())}
        async with session.get(rt.rest + "/rt", headers=basic) as a:
            assert a.status == want
    mozilla = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"}
    async with session.get(rt.rest + "/rt", headers=mozilla, allow_redirects=False) as a:
        assert a.status == 302 and a.headers["Location"] == "/"
    bad = {**mozilla, "Authorization": "token 1-14-0bad"}
    async with session.get(rt.rest + "/rt", headers=bad, allow_redirects=False) as a:
        assert a.status == 302
    good = {**mozilla, "Authorization": f"token {rt.token}"}
    async with session.get(rt.rest + "/rt", headers=good, allow_redirects=False) as a:
        assert a.status == 200


# -- requestors -----------------------------------------------------------------------


async def test_requestor_by_email_is_created(api: Api) -> None:
    address = f"{unique('cust')}@example.org"
    status, _, _ = await api.call("GET", f"/user/{address}")
    assert status == 404
    await api.create_ticket(Requestor=address)
    user = await api.ok("GET", f"/user/{address}")
    assert user["Name"] == user["EmailAddress"] == address
    assert user["Privileged"] == 0 and isinstance(user["id"], int)
    found = await api.ok("POST", "/users", [{"field": "EmailAddress", "value": address}])
    assert [u["id"] for u in found["items"]] == [address]


async def test_phone_requestor_is_a_user_named_by_helpline(api: Api) -> None:
    name = unique("hl")
    phone = "+49 170 " + str(uuid.uuid4().int)[:7]
    fields = {"Name": name, "RealName": "Caller", "MobilePhone": phone}
    status, data, _ = await api.call("POST", "/user", fields)
    assert status == 201
    assert data["id"] == name  # the Name, not the numeric id
    status, data, _ = await api.call("POST", "/user", fields)
    assert (status, data) == (400, {"message": "Name in use"})
    user = await api.ok("GET", f"/user/{name}")
    assert user["MobilePhone"] == phone and user["EmailAddress"] == ""
    numeric = user["id"]
    assert isinstance(numeric, int)

    async def requestors(requestor: Any) -> list[str]:
        ticket_id = await api.create_ticket(Requestor=requestor)
        return [r["id"] for r in (await api.ok("GET", f"/ticket/{ticket_id}"))["Requestor"]]

    by_id, by_id_text, by_name = await asyncio.gather(
        requestors([numeric]), requestors(str(numeric)), requestors(name)
    )
    assert by_id == by_id_text == by_name == [name]
    # MobilePhone is not a searchable field for /users: the condition is IGNORED and every
    # user comes back. Find phone customers by Name (GET /user/hl-<id>), never this way.
    found = await api.ok("POST", "/users", [{"field": "MobilePhone", "value": phone}])
    assert len(found["items"]) > 1 and "root" in [u["id"] for u in found["items"]]


# -- RT's own mail to requestors ------------------------------------------------------


async def test_rt_mails_requestors_unless_the_queue_is_silenced(api: Api) -> None:
    rt = api.rt
    loud = f"{unique('loud')}@example.org"
    ticket_id = await api.create_ticket(Requestor=loud)
    [autoreply] = await wait_mails(rt, loud, 1)
    assert autoreply["Subject"].startswith(f"[helpline-ci #{ticket_id}] AutoReply:")
    await api.ok(
        "POST",
        f"/ticket/{ticket_id}/correspond",
        {"Content": "helpline relays", "ContentType": "text/plain"},
        want=201,
    )
    await asyncio.to_thread(rt.agent_correspond, ticket_id, "agent writes")
    await api.ok("PUT", f"/ticket/{ticket_id}", {"Status": "resolved"})
    mails = await wait_mails(rt, loud, 4)
    assert len(mails) == 4  # autoreply, two correspondences, "Resolved:"
    assert mails[-1]["Subject"].startswith(f"[helpline-ci #{ticket_id}] Resolved:")

    # Empty queue-level copies of the requestor templates silence that queue only.
    quiet = unique("Quiet")
    await api.ok("POST", "/queue", {"Name": quiet, "CorrespondAddress": "q@helpline-ci.test"}, 201)
    await asyncio.to_thread(rt.insert_data, silence_requestors_initialdata(quiet))
    hush = f"{unique('hush')}@example.org"
    quiet_id = await api.create_ticket(Queue=quiet, Requestor=hush, AdminCc=rt.agent_email)
    await api.ok(
        "POST",
        f"/ticket/{quiet_id}/correspond",
        {"Content": "helpline relays", "ContentType": "text/plain"},
        want=201,
    )
    await api.ok("PUT", f"/ticket/{quiet_id}", {"Status": "resolved"})
    # The agent (AdminCc) is still told about the correspondence: other templates are untouched.
    to_agent = [
        m for m in await wait_mails(rt, rt.agent_email, 2) if f"#{quiet_id}]" in m["Subject"]
    ]
    assert len(to_agent) == 2  # "On Create Notify Owner and AdminCcs" + on correspond
    assert mails_to(rt, hush) == []
    assert len(mails_to(rt, loud)) == 4  # and the Helpline queue is as loud as before
