"""The rt backend against the real Request Tracker 5 (Debian's), through a fault proxy.

One private RT (tests/rt.py) serves the whole module; each test makes its own
tickets. RT itself cannot be told to fail, so the daemon reaches it through a
small passthrough proxy (a FakeService) on which the contract arms its faults:
a CommitThenReset there really creates the ticket in RT and loses the answer.
The driver reads RT with a web-session cookie (about 10 ms a call, where
token or password auth costs a bcrypt, about 0.3 s), because the contract
calls it synchronously on the daemon's own event loop.
"""

from __future__ import annotations

import asyncio
import base64
import http.cookiejar
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import web

from gateway.backends.rt import RtConfig, html_text
from tests.backend_contract import NAME, BackendContract, Seen, texts
from tests.conftest import LiveDaemon, until
from tests.fakes.harness import CommitThenReset, FakeService, Fault, Status
from tests.integration import test_outbound
from tests.integration.test_outbound import Relay, customer_writes, daemon_with_mail
from tests.integration.test_smtp import mail, send
from tests.rt import (
    CONVERSATION_CF,
    EVENT_CF,
    QUEUE,
    PrivateRT,
    need_rt,
    silence_requestors_initialdata,
    start_rt,
)

relay = test_outbound.relay  # the SMTP relay fixture (the team's relay for agent replies)

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3 the manual\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"p" * 100

# The API user of the rights test and the rights docs/backends/rt.md lists.
HELPLINE_USER = "helpline"
HELPLINE_PASSWORD = "helpline-secret"
QUEUE_RIGHTS = (
    "SeeQueue",
    "CreateTicket",
    "ShowTicket",
    "ShowTicketComments",
    "ReplyToTicket",
    "CommentOnTicket",
    "ModifyTicket",
    "SeeCustomField",
    "ModifyCustomField",
    "SetInitialCustomField",
)
GLOBAL_RIGHTS = ("AdminUsers",)


def _setup_data() -> str:
    """helpline's own API user with the documented rights, and the queue silenced."""
    acl = "".join(
        f"    {{ UserId => '{HELPLINE_USER}', Queue => '{QUEUE}', Right => '{right}' }},\n"
        for right in QUEUE_RIGHTS
    ) + "".join(
        f"    {{ UserId => '{HELPLINE_USER}', Right => '{right}' }},\n" for right in GLOBAL_RIGHTS
    )
    users = (
        f"@Users = ({{ Name => '{HELPLINE_USER}', Password => '{HELPLINE_PASSWORD}', "
        "RealName => 'helpline', Privileged => 1 });\n"
    )
    return users + f"@ACL = (\n{acl});\n" + silence_requestors_initialdata(QUEUE)


class RtProxy(FakeService):
    """Passes every request to RT; armed faults apply on the way (harness middleware)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self._session: aiohttp.ClientSession | None = None

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._forward)
        app.on_cleanup.append(self._close)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        keep = ("authorization", "content-type", "user-agent", "accept", "cookie")
        headers = {k: v for k, v in request.headers.items() if k.lower() in keep}
        async with self._session.request(
            request.method,
            self.target + request.path_qs,
            data=await request.read(),
            headers=headers,
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            out = {
                k: v for k in ("Content-Type", "Location", "ETag") if (v := answer.headers.get(k))
            }
            return web.Response(status=answer.status, body=body, headers=out)

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()


class Reader:
    """REST2 reads as root over a logged-in web session (fast: no bcrypt per call)."""

    def __init__(self, rt: PrivateRT) -> None:
        self.rt = rt
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        login = urllib.parse.urlencode({"user": "root", "pass": rt.root_password}).encode()
        with self._opener.open(rt.url + "/NoAuth/Login.html", data=login, timeout=30):
            pass
        self._bodies: dict[str, tuple[str, str, str]] = {}  # txn id -> (type, creator, text)

    def get(self, path: str, **params: str) -> Any:
        url = self.rt.rest + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with self._opener.open(url, timeout=30) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as err:
            raise AssertionError(f"RT GET {path}: {err.code} {err.read()[:300]!r}") from err

    def items(self, path: str, **params: str) -> list[dict[str, Any]]:
        page = self.get(path, per_page="100", **params)
        assert not page.get("next_page"), "more than one page: not expected in a test"
        return list(page["items"])

    def tickets(self, conversation_id: str, cf: str = CONVERSATION_CF) -> list[str]:
        query = f"'CF.{{{cf}}}' = '{conversation_id}'"
        return [str(t["id"]) for t in self.items("/tickets", query=query, orderby="id")]

    def transactions(self, ticket_id: str) -> list[tuple[str, str, str]]:
        """(Type, Creator name, text) of the ticket's messages, oldest first."""
        query = (
            f"ObjectType = 'RT::Ticket' AND ObjectId = {int(ticket_id)} AND "
            "(Type = 'Create' OR Type = 'Correspond' OR Type = 'Comment')"
        )
        found = []
        for txn in self.items("/transactions", query=query, orderby="id", fields="Type,Creator"):
            if txn["id"] not in self._bodies:  # transactions never change: read each once
                text = self.text(txn["id"])
                self._bodies[txn["id"]] = (txn["Type"], txn["Creator"]["id"], text)
            found.append(self._bodies[txn["id"]])
        return found

    def parts(self, txn_id: str) -> list[dict[str, Any]]:
        return self.items(f"/transaction/{txn_id}/attachments", fields="ContentType,Filename")

    def content(self, attachment_id: str) -> bytes:
        return base64.b64decode(self.get(f"/attachment/{attachment_id}")["Content"] or "")

    def text(self, txn_id: str) -> str:
        for part in self.parts(txn_id):
            if part["ContentType"] in ("text/plain", "text/html") and not part["Filename"]:
                return self.content(part["id"]).decode("utf-8", "replace")
        return ""


class RtDriver:
    type = "rt"

    def __init__(self, rt: PrivateRT, proxy: RtProxy, reader: Reader) -> None:
        self.rt = rt
        self.proxy = proxy
        self.reader = reader

    def section(self) -> str:
        return (
            'type = "rt"\n'
            f'url = "{self.proxy.url}"\n'
            f'token = "{self.rt.token}"\n'
            'retry_base = "50ms"\nretry_cap = "1s"\ntimeout = "5s"\npoll_interval = "200ms"\n'
        )

    def arm(self, fault: Fault, on: Literal["create", "add"], times: int = 1) -> None:
        path = r"^/REST/2\.0/ticket/?$" if on == "create" else r"/ticket/\d+/(correspond|comment)$"
        self.proxy.arm(fault, method="POST", path=path, times=times)

    def refusal(self) -> Status:
        # What REST2 answers a message without ContentType (RT::REST2::Resource::Message).
        return Status(400, {"message": "ContentType is a required field for application/json"})

    def tickets(self, conversation_id: str) -> list[str]:
        return self.reader.tickets(conversation_id)

    def messages(self, ticket_id: str) -> list[Seen]:
        seen = []
        for kind, creator, text in self.reader.transactions(ticket_id):
            if kind == "Comment":
                seen.append(Seen(text, "note"))
            elif kind == "Create" or creator in ("root", HELPLINE_USER):  # helpline's users
                seen.append(Seen(text, "customer"))
            else:
                seen.append(Seen(text, "agent"))
        return seen

    def resolved(self, ticket_id: str) -> bool:
        return bool(self.reader.get(f"/ticket/{ticket_id}")["Status"] == "resolved")

    async def agent_reply(self, ticket_id: str, text: str, *, public: bool = True) -> None:
        act = self.rt.agent_correspond if public else self.rt.agent_comment
        await asyncio.to_thread(act, ticket_id, text)


@pytest.fixture(scope="module")
def rt_server() -> Iterator[PrivateRT]:
    need_rt()
    server = start_rt()
    try:
        server.insert_data(_setup_data())
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def proxy(rt_server: PrivateRT) -> Iterator[RtProxy]:
    with RtProxy(rt_server.url) as running:
        yield running


@pytest.fixture(scope="module")
def reader(rt_server: PrivateRT) -> Reader:
    return Reader(rt_server)


@pytest.fixture
def driver(rt_server: PrivateRT, proxy: RtProxy, reader: Reader) -> Iterator[RtDriver]:
    proxy.disarm()
    with proxy.lock:
        proxy.requests.clear()  # the log is the module's; each test reads its own
    yield RtDriver(rt_server, proxy, reader)
    proxy.disarm()


class TestRt(BackendContract):
    pass


# -- vendor-specific ---------------------------------------------------------------


async def _start(
    make_daemon: Any, driver: RtDriver, relay: tuple[Relay, int], section: str | None = None
) -> tuple[LiveDaemon, int]:
    keys = driver.section() if section is None else section
    return await daemon_with_mail(make_daemon, relay[1], core=f"[backends.{NAME}]\n{keys}\n")


async def _ticket(driver: RtDriver, conversation: str) -> str:
    await until(lambda: len(driver.tickets(conversation)) == 1, 15)
    return driver.tickets(conversation)[0]


async def _view(live: LiveDaemon) -> dict[str, Any]:
    _, view, _ = await live.get(f"/v1/backends/{NAME}")
    return dict(view)


async def test_a_lost_follow_up_answer_is_found_by_its_event_marker(
    make_daemon: Any, driver: RtDriver, relay: tuple[Relay, int]
) -> None:
    live, _ = await _start(make_daemon, driver, relay)
    body = {"from": {"email": "marker@example.org"}, "text": "First."}
    _, ack, _ = await live.post("/v1/messages", body)
    ticket = await _ticket(driver, ack["conversation_id"])
    driver.arm(CommitThenReset(), on="add")
    _, second, _ = await live.post("/v1/messages", {**body, "text": "Second."})
    await until(lambda: texts(driver.messages(ticket), "customer") == ["First.", "Second."], 15)
    await asyncio.sleep(0.5)  # room for a wrong second post
    assert texts(driver.messages(ticket), "customer") == ["First.", "Second."]
    # the retry asked RT for the event's transaction CF before posting again
    lookups = [
        r.query.get("query", "")
        for r in driver.proxy.recorded("GET", r"/transactions$")
        if second["event_id"] in r.query.get("query", "")
    ]
    assert lookups and f"'CF.{{{EVENT_CF}}}'" in lookups[0]
    # and RT holds the marker on that one transaction
    query = (
        f"ObjectType = 'RT::Ticket' AND ObjectId = {ticket} "
        f"AND 'CF.{{{EVENT_CF}}}' = '{second['event_id']}'"
    )
    [txn] = driver.reader.items("/transactions", query=query)
    assert driver.reader.text(txn["id"]) == "Second."


async def test_helplines_own_writes_are_not_taken_back_as_agent_replies(
    make_daemon: Any, driver: RtDriver, relay: tuple[Relay, int]
) -> None:
    live, port = await _start(make_daemon, driver, relay)
    first = await customer_writes(live, port)
    conversation = first["data"]["conversation_id"]
    ticket = await _ticket(driver, conversation)
    # an agent answers through helpline's API: it goes into RT as correspondence by root
    status, _, _ = await live.post(
        f"/v1/conversations/{conversation}/replies",
        {"text": "Answered from the API.", "author": {"kind": "human", "name": "Sam"}},
    )
    assert status in (200, 201)
    await until(lambda: len(relay[0].received) == 1)
    await until(
        lambda: "Answered from the API." in [t for _, _, t in driver.reader.transactions(ticket)]
    )
    await asyncio.sleep(1.0)  # several polls
    assert len(relay[0].received) == 1
    outbound = [e for e in await live.stream() if e["type"] == "helpline.message.outbound.v1"]
    assert len(outbound) == 1 and outbound[0]["source"] != f"/backends/{NAME}"
    # RT mailed the customer nothing itself: the queue's requestor templates are empty
    assert not [m for m in driver.rt.mails() if "ann@example.org" in m.split("\n\n", 1)[0]]


async def test_attachments_travel_both_ways_and_html_replies_become_text(
    make_daemon: Any, driver: RtDriver, relay: tuple[Relay, int]
) -> None:
    live, port = await _start(make_daemon, driver, relay)
    raw = mail(
        "Ann <ann@example.org>",
        "support@example.com",
        "Broken",
        "See the photo",
        message_id="<att1@customer.example>",
    )
    raw.add_attachment(PNG, maintype="image", subtype="png", filename="photo.png")
    await asyncio.to_thread(send, port, raw, ["support@example.com"])
    found = await _inbound(live)
    ticket = await _ticket(driver, found[0]["data"]["conversation_id"])
    query = f"ObjectType = 'RT::Ticket' AND ObjectId = {ticket} AND Type = 'Create'"
    [create] = driver.reader.items("/transactions", query=query)
    files = [p for p in driver.reader.parts(create["id"]) if p["Filename"]]
    assert [(p["Filename"], p["ContentType"]) for p in files] == [("photo.png", "image/png")]
    assert driver.reader.content(files[0]["id"]) == PNG

    await asyncio.to_thread(
        driver.rt.agent_correspond,
        ticket,
        "Here is the manual.",
        [("manual.pdf", "application/pdf", PDF)],
    )
    await until(lambda: len(relay[0].received) == 1, 15)
    [mailed] = relay[0].received
    assert "Here is the manual." in mailed.get_body(("plain",)).get_content()
    got = [(p.get_filename(), p.get_content()) for p in mailed.iter_attachments()]
    assert got == [("manual.pdf", PDF)]

    # RT's web editor writes HTML only: the customer gets its text (and the HTML)
    status, _, answer = await asyncio.to_thread(
        driver.rt.request,
        "POST",
        f"/ticket/{ticket}/correspond",
        {"Content": "<p>Step <b>one</b>&nbsp;done.</p><p>Bye</p>", "ContentType": "text/html"},
        user=(driver.rt.agent, driver.rt.agent_password),
    )
    assert status == 201, answer
    await until(lambda: len(relay[0].received) == 2, 15)
    second = relay[0].received[1]
    assert second.get_body(("plain",)).get_content().split() == ["Step", "one", "done.", "Bye"]
    html = second.get_body(("html",))
    assert html is not None and "<b>one</b>" in html.get_content()


async def _inbound(live: LiveDaemon) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in await live.stream() if e["type"] == "helpline.message.inbound.v1"]
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_a_missing_marker_field_holds_tickets_back_until_it_exists(
    make_daemon: Any, driver: RtDriver, relay: tuple[Relay, int]
) -> None:
    field = f"Conv-{uuid.uuid4().hex[:8]}"
    live, _ = await _start(
        make_daemon, driver, relay, driver.section() + f'ticket_cf = "{field}"\n'
    )
    _, ack, _ = await live.post("/v1/messages", {"from": {"email": "cf@example.org"}, "text": "Hi"})

    deadline = time.monotonic() + 10
    while field not in str((view := await _view(live)).get("last_error")):
        assert time.monotonic() < deadline, view
        await asyncio.sleep(0.1)
    assert view["state"] == "degraded" and view["dead_letters"] == 0
    assert not driver.proxy.recorded("POST", r"^/REST/2\.0/ticket/?$")  # nothing half-made

    data = (
        f"@CustomFields = ({{ Name => '{field}', Type => 'FreeformSingle', "
        f"LookupType => 'RT::Queue-RT::Ticket', ApplyTo => '{QUEUE}' }});\n1;\n"
    )
    await asyncio.to_thread(driver.rt.insert_data, data)
    await until(lambda: len(driver.reader.tickets(ack["conversation_id"], cf=field)) == 1, 15)


async def test_wrong_credentials_degrade_the_backend_and_park_nothing(
    make_daemon: Any, driver: RtDriver, relay: tuple[Relay, int]
) -> None:
    section = driver.section().replace(driver.rt.token, "1-14-" + "0" * 32)
    live, _ = await _start(make_daemon, driver, relay, section)
    await live.post("/v1/messages", {"from": {"email": "who@example.org"}, "text": "Hello"})
    deadline = time.monotonic() + 10
    while (view := await _view(live))["state"] != "degraded" or view["lag_events"] < 1:
        assert time.monotonic() < deadline, view
        await asyncio.sleep(0.1)
    assert view["dead_letters"] == 0 and "401" in view["last_error"]
    assert not driver.proxy.recorded("POST", r"^/REST/2\.0/ticket/?$") or all(
        r.status == 401 for r in driver.proxy.recorded("POST", r"^/REST/2\.0/ticket/?$")
    )


async def test_the_documented_rights_are_enough_and_phone_customers_get_an_rt_user(
    make_daemon: Any, driver: RtDriver, relay: tuple[Relay, int]
) -> None:
    """A non-superuser API user with exactly the rights the doc lists, by password."""
    section = driver.section().replace(f'token = "{driver.rt.token}"\n', "")
    section += f'user = "{HELPLINE_USER}"\npassword = "{HELPLINE_PASSWORD}"\n'
    live, _ = await _start(make_daemon, driver, relay, section)
    digits = str(uuid.uuid4().int)[:7]
    body = {"from": {"phone": f"+49 30 {digits}", "name": "Caller"}, "text": "Call me back."}
    _, ack, _ = await live.post("/v1/messages", body)
    conversation = ack["conversation_id"]
    ticket = await _ticket(driver, conversation)
    [requestor] = driver.reader.get(f"/ticket/{ticket}")["Requestor"]
    assert requestor["id"] == f"hl-{ack['contact_id']}"
    user = driver.reader.get(f"/user/{requestor['id']}")
    assert user["MobilePhone"].replace(" ", "") == f"+4930{digits}"
    assert user["RealName"] == "Caller"

    # the same contact's next conversation reuses the RT user (no second POST /user)
    await live.post(f"/v1/conversations/{conversation}/resolve", {})
    await until(lambda: driver.resolved(ticket), 15)
    _, again, _ = await live.post("/v1/messages", {**body, "text": "Again."})
    if again["conversation_id"] != conversation:
        other = await _ticket(driver, again["conversation_id"])
        assert driver.reader.get(f"/ticket/{other}")["Requestor"][0]["id"] == requestor["id"]
    else:
        await until(lambda: texts(driver.messages(ticket), "customer")[-1:] == ["Again."], 15)
    assert len(driver.proxy.recorded("POST", r"^/REST/2\.0/user/?$")) == 1

    # an agent's answer comes back through the poller, under this API user too
    await driver.agent_reply(ticket, "Calling you now.")

    async def replied() -> bool:
        stream = await live.stream()
        return any(
            e["type"] == "helpline.message.outbound.v1" and e["data"]["text"] == "Calling you now."
            for e in stream
        )

    deadline = time.monotonic() + 15
    while not await replied():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert (await _view(live))["dead_letters"] == 0


def test_config_needs_credentials_and_takes_the_rest2_url() -> None:
    token = "1-14-" + "ab" * 16
    config = RtConfig.model_validate({"url": "https://rt.example.com/REST/2.0/", "token": token})
    assert config.url == "https://rt.example.com"
    assert (config.queue, config.ticket_cf, config.event_cf) == (
        "Helpline",
        "Helpline-Conversation",
        "Helpline-Event",
    )
    for bad, words in (
        ({"url": "https://rt.example.com"}, "token"),
        ({"url": "https://rt.example.com", "user": "helpline"}, "password"),
        ({"url": "rt.example.com", "token": token}, "https://"),
        ({"url": "https://rt.example.com", "token": "opaque"}, "set user"),
    ):
        with pytest.raises(ValueError, match=words):
            RtConfig.model_validate(bad)
    RtConfig.model_validate({"url": "https://rt", "token": "opaque", "user": "helpline"})


def test_html_text() -> None:
    assert html_text("<p>A&amp;B</p><p>C<br>D</p><style>p{}</style>") == "A&B\nC\nD"


async def test_replies_made_while_helpline_is_down_are_sent_once_after_the_restart(
    make_daemon: Any, driver: RtDriver, relay: tuple[Relay, int]
) -> None:
    live, port = await _start(make_daemon, driver, relay)
    first = await customer_writes(live, port)
    ticket = await _ticket(driver, first["data"]["conversation_id"])
    polls = driver.proxy.recorded("GET", r"/transactions$")
    cursor = next(
        int(r.query["query"].rsplit("id > ", 1)[1])
        for r in polls
        if "Correspond" in r.query.get("query", "")
    )
    assert cursor > 0  # the first start begins at RT's newest transaction, not at 0
    state = live.daemon.state_dir
    await live.daemon.stop()
    await driver.agent_reply(ticket, "Answered while you were away.")
    again, _ = await _start_again(make_daemon, driver, relay, state)
    await until(lambda: len(relay[0].received) == 1, 15)
    await asyncio.sleep(1.0)  # several polls more
    assert len(relay[0].received) == 1
    assert (
        "Answered while you were away." in relay[0].received[0].get_body(("plain",)).get_content()
    )
    outbound = [e for e in await again.stream() if e["type"] == "helpline.message.outbound.v1"]
    assert len(outbound) == 1


async def _start_again(
    make_daemon: Any, driver: RtDriver, relay: tuple[Relay, int], state: Any
) -> tuple[LiveDaemon, int]:
    return await daemon_with_mail(
        make_daemon, relay[1], core=f"[backends.{NAME}]\n{driver.section()}\n", state_dir=state
    )


async def test_a_customers_follow_up_names_its_sender_and_channel_in_the_history(
    make_daemon: Any, driver: RtDriver, relay: tuple[Relay, int]
) -> None:
    live, port = await _start(make_daemon, driver, relay)
    first = await customer_writes(live, port)  # email from ann@example.org
    conversation = first["data"]["conversation_id"]
    body = {"from": {"email": "ann@example.org", "name": "Ann"}, "text": "Also the fax."}
    status, _, _ = await live.post("/v1/messages", body)
    assert status == 201
    ticket = await _ticket(driver, conversation)
    await until(lambda: len(texts(driver.messages(ticket), "customer")) == 2, 30)
    history = await asyncio.to_thread(driver.rt.history, ticket)
    corresponds = [t for t in history if t["Type"] == "Correspond"]
    assert [t["Data"].strip() for t in corresponds] == ["Ann via api"]
