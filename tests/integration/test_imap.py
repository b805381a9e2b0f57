"""The imap connector against a real Dovecot: UID cursor, marking after commit, IDLE,
polling, UIDVALIDITY changes, reconnection, XOAUTH2, and SMTP+IMAP deduplication."""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Any

import pytest

from tests.conftest import LiveDaemon, auth, free_port, until
from tests.dovecot import PrivateDovecot
from tests.oauth_fake import OAuthFake
from tests.peers import need

USERS = {f"box{i}@example.test": f"secret{i}" for i in range(1, 14)}
INBOUND = "helpline.message.inbound.v1"


@pytest.fixture(scope="module")
def oauth() -> Iterator[OAuthFake]:
    with OAuthFake("box12@example.test", expires_in=3600) as fake:
        yield fake


@pytest.fixture(scope="module")
def dovecot(oauth: OAuthFake) -> Iterator[PrivateDovecot]:
    need("dovecot")
    with PrivateDovecot(USERS, introspection_url=oauth.introspection_url) as server:
        yield server


def mail(n: int, subject: str = "", sender: str = "ann@example.org") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"] = sender, "support@example.test"
    msg["Subject"] = subject or f"Question {n}"
    msg["Message-ID"] = f"<q{n}.{time.time_ns()}@customer.example>"
    msg["Date"] = "Mon, 23 Nov 2026 09:00:00 +0100"
    msg.set_content(f"Hello, this is question number {n}. Where is my order?")
    return msg.as_bytes(policy=SMTP_POLICY)


def imap_section(dc: PrivateDovecot, user: str, extra: str = "", name: str = "imap") -> str:
    return (
        f'[connectors.{name}]\ntype = "imap"\nhost = "127.0.0.1"\nport = {dc.port}\n'
        f'security = "starttls"\nca_file = "{dc.cert_path}"\nverify_certificate = false\n'
        f'user = "{user}"\npassword = "{USERS[user]}"\naddress = "support@example.test"\n'
        "reconnect_initial = 0.2\nreconnect_cap = 1\n" + extra
    )


async def inbound(live: LiveDaemon, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in await live.stream() if e["type"] == INBOUND]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def component(live: LiveDaemon, name: str = "imap") -> dict[str, Any]:
    _, body, _ = await live.get("/readyz", token=None)
    return body["components"][f"connectors.{name}"]  # type: ignore[no-any-return]


async def running(live: LiveDaemon, name: str = "imap") -> None:
    for _ in range(200):
        if (await component(live, name))["state"] == "running":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(await component(live, name))


async def test_a_mail_in_the_mailbox_becomes_a_message_and_is_marked_seen(
    dovecot: PrivateDovecot, make_daemon: Callable[..., Any]
) -> None:
    user = "box1@example.test"
    uid = await asyncio.to_thread(dovecot.append, user, "INBOX", mail(1, "Broken invoice"))
    live = await make_daemon(imap_section(dovecot, user))
    (event,) = await inbound(live, 1)
    data = event["data"]
    assert event["source"] == "/connectors/imap"
    assert data["channel"] == "email" and data["subject"] == "Broken invoice"
    assert data["from"]["email"] == "ann@example.org"
    assert data["recipients"] == ["support@example.test"]  # replies go out from it
    await until(lambda: "\\Seen" in dovecot.flags(user, "INBOX", uid))
    assert (await component(live))["counters"]["fetched"] == 1


async def test_idle_brings_new_mail_without_waiting_for_a_poll(
    dovecot: PrivateDovecot, make_daemon: Callable[..., Any]
) -> None:
    user = "box2@example.test"
    live = await make_daemon(imap_section(dovecot, user, "poll_interval = 3600\n"))
    await running(live)
    await asyncio.sleep(0.3)  # the connector is in IDLE now
    await asyncio.to_thread(dovecot.append, user, "INBOX", mail(2, "Pushed"))
    (event,) = await inbound(live, 1)
    assert event["data"]["subject"] == "Pushed"


async def test_without_idle_the_folder_is_polled(
    dovecot: PrivateDovecot, make_daemon: Callable[..., Any]
) -> None:
    user = "box3@example.test"
    live = await make_daemon(imap_section(dovecot, user, "idle = false\npoll_interval = 0.3\n"))
    await running(live)
    await asyncio.to_thread(dovecot.append, user, "INBOX", mail(3, "Polled"))
    (event,) = await inbound(live, 1)
    assert event["data"]["subject"] == "Polled"


async def test_move_mode_moves_committed_mail_out_of_the_folder(
    dovecot: PrivateDovecot, make_daemon: Callable[..., Any]
) -> None:
    user = "box4@example.test"
    await asyncio.to_thread(dovecot.create_folder, user, "Helpline")
    for n in range(3):
        await asyncio.to_thread(dovecot.append, user, "INBOX", mail(40 + n))
    live = await make_daemon(
        imap_section(dovecot, user, 'after_ingest = "move"\nmove_to = "Helpline"\n')
    )
    assert len(await inbound(live, 3)) == 3
    await until(lambda: dovecot.uids(user, "INBOX") == [])
    assert len(dovecot.uids(user, "Helpline")) == 3


async def test_start_unseen_leaves_mail_read_before_helpline_alone(
    dovecot: PrivateDovecot, make_daemon: Callable[..., Any]
) -> None:
    user = "box5@example.test"
    await asyncio.to_thread(dovecot.append, user, "INBOX", mail(50, "Old, read"), ["\\Seen"])
    await asyncio.to_thread(dovecot.append, user, "INBOX", mail(51, "Unread"))
    await asyncio.to_thread(dovecot.append, user, "INBOX", mail(52, "Old, read 2"), ["\\Seen"])
    live = await make_daemon(imap_section(dovecot, user))
    await running(live)
    await asyncio.to_thread(dovecot.append, user, "INBOX", mail(53, "New"))
    found = await inbound(live, 2)
    await asyncio.sleep(0.5)  # nothing else may follow
    found = await inbound(live, 2)
    assert sorted(e["data"]["subject"] for e in found) == ["New", "Unread"]


async def test_a_restart_neither_repeats_nor_misses(
    dovecot: PrivateDovecot, make_daemon: Callable[..., Any]
) -> None:
    user = "box6@example.test"
    for n in range(3):
        await asyncio.to_thread(dovecot.append, user, "INBOX", mail(60 + n))
    first = await make_daemon(imap_section(dovecot, user))
    assert len(await inbound(first, 3)) == 3
    state = first.daemon.state_dir
    await first.daemon.stop()
    # While it is down: two more arrive, and a human marks one of the old ones unread.
    for n in range(2):
        await asyncio.to_thread(dovecot.append, user, "INBOX", mail(65 + n, f"While down {n}"))
    with dovecot.client(user) as imap:
        imap.select_folder("INBOX")
        imap.remove_flags([1], [b"\\Seen"])
    second = await make_daemon(imap_section(dovecot, user), state_dir=state)
    found = await inbound(second, 5)
    await asyncio.sleep(0.5)
    found = await inbound(second, 5)
    subjects = [e["data"]["subject"] for e in found]
    assert len(subjects) == 5 and len(set(subjects)) == 5, subjects
    assert subjects[3:] == ["While down 0", "While down 1"]
    counters = (await component(second))["counters"]
    assert counters["fetched"] == 2 and counters["already_held"] == 0  # read from its UID on


async def test_a_changed_uidvalidity_reads_again_without_duplicating(
    dovecot: PrivateDovecot, make_daemon: Callable[..., Any]
) -> None:
    user = "box7@example.test"
    for n in range(2):
        await asyncio.to_thread(dovecot.append, user, "INBOX", mail(70 + n))
    live = await make_daemon(imap_section(dovecot, user, 'start = "all"\n'))
    assert len(await inbound(live, 2)) == 2
    await asyncio.to_thread(dovecot.change_uidvalidity, user, "INBOX")
    await asyncio.to_thread(dovecot.append, user, "INBOX", mail(72, "After the change"))
    found = await inbound(live, 3)
    await asyncio.sleep(0.5)
    found = await inbound(live, 3)
    assert [e["data"]["subject"] for e in found][-1] == "After the change"
    assert len(found) == 3
    counters = (await component(live))["counters"]
    assert counters["already_held"] == 2  # the two old ones, read again, only marked


async def test_a_dropped_connection_is_retried_and_mail_still_arrives(
    dovecot: PrivateDovecot, make_daemon: Callable[..., Any]
) -> None:
    user = "box8@example.test"
    live = await make_daemon(imap_section(dovecot, user))
    await running(live)
    await asyncio.to_thread(dovecot.doveadm, "kick", user)
    await asyncio.to_thread(dovecot.append, user, "INBOX", mail(80, "After a kick"))
    (event,) = await inbound(live, 1)
    assert event["data"]["subject"] == "After a kick"
    assert (await component(live))["counters"]["reconnects"] >= 1
    status, metrics = await metrics_text(live)
    assert status == 200
    assert 'helpline_component_counter{component="imap",counter="reconnects"}' in metrics


async def metrics_text(live: LiveDaemon) -> tuple[int, str]:
    async with live.http.get(live.url + "/metrics", headers=auth()) as resp:
        return resp.status, await resp.text()


async def test_a_wrong_password_shows_in_readyz_and_the_daemon_keeps_serving(
    dovecot: PrivateDovecot, make_daemon: Callable[..., Any]
) -> None:
    user = "box9@example.test"
    section = imap_section(dovecot, user).replace(USERS[user], "not-the-password")
    live = await make_daemon(section)
    for _ in range(100):
        health = await component(live)
        if health["last_error"]:
            break
        await asyncio.sleep(0.05)
    assert health["state"] == "degraded"
    assert "refused" in health["last_error"] and user in health["last_error"]
    assert "not-the-password" not in health["last_error"]
    status, body, _ = await live.get("/readyz", token=None)
    assert status == 200 and body["status"] == "degraded"


async def test_a_message_over_the_size_limit_stays_in_the_mailbox_unread(
    dovecot: PrivateDovecot, make_daemon: Callable[..., Any]
) -> None:
    user = "box10@example.test"
    big = mail(100, "Huge").replace(b"Where is my order?", b"x" * 20_000)
    big_uid = await asyncio.to_thread(dovecot.append, user, "INBOX", big)
    await asyncio.to_thread(dovecot.append, user, "INBOX", mail(101, "Small"))
    live = await make_daemon(imap_section(dovecot, user, "max_message_size = 10000\n"))
    (event,) = await inbound(live, 1)
    assert event["data"]["subject"] == "Small"
    assert (await component(live))["counters"]["too_large"] == 1
    assert "\\Seen" not in dovecot.flags(user, "INBOX", big_uid)


async def test_the_same_mail_by_smtp_and_by_imap_is_one_event(
    dovecot: PrivateDovecot, make_daemon: Callable[..., Any]
) -> None:
    user = "box11@example.test"
    port = free_port()
    smtp = (
        f'[connectors.mx]\ntype = "smtp"\nlisten = "127.0.0.1:{port}"\n'
        'recipients = ["support@example.test"]\n'
    )
    live = await make_daemon(smtp + imap_section(dovecot, user))
    await running(live)
    raw = mail(110, "Sent twice")

    def by_smtp() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("ann@example.org", ["support@example.test"], raw)

    await asyncio.to_thread(by_smtp)
    assert len(await inbound(live, 1)) == 1
    # The copy the mailbox holds got trace fields on the way; the key ignores them.
    delivered = b"Received: from mx.example.test by imap.example.test; Mon, 23 Nov 2026\r\n" + raw
    uid = await asyncio.to_thread(dovecot.append, user, "INBOX", delivered)
    await until(lambda: "\\Seen" in dovecot.flags(user, "INBOX", uid))
    found = await inbound(live, 2, timeout=1.0)
    assert len(found) == 1
    assert (await component(live))["counters"]["already_held"] == 1


async def test_xoauth2_logs_in_with_a_token_from_the_refresh_flow(
    dovecot: PrivateDovecot, oauth: OAuthFake, make_daemon: Callable[..., Any]
) -> None:
    user = "box12@example.test"
    section = (
        f'[connectors.imap]\ntype = "imap"\nhost = "127.0.0.1"\nport = {dovecot.imaps_port}\n'
        f'security = "tls"\nverify_certificate = false\nuser = "{user}"\n'
        'auth = "xoauth2"\nreconnect_initial = 0.2\n'
        f'[connectors.imap.oauth]\ntoken_url = "{oauth.token_url}"\n'
        f'client_id = "{oauth.client_id}"\nclient_secret = "{oauth.client_secret}"\n'
        f'refresh_token = "{oauth.refresh_token}"\n'
    )
    issued = oauth.issued
    await asyncio.to_thread(dovecot.append, user, "INBOX", mail(120, "By OAuth"))
    live = await make_daemon(section)
    (event,) = await inbound(live, 1)
    assert event["data"]["subject"] == "By OAuth"
    assert oauth.issued == issued + 1


async def test_a_full_backlog_pauses_reading_and_loses_nothing(
    dovecot: PrivateDovecot, make_daemon: Callable[..., Any]
) -> None:
    user = "box13@example.test"
    for n in range(6):
        await asyncio.to_thread(dovecot.append, user, "INBOX", mail(130 + n, f"Backlogged {n}"))
    live = await make_daemon(imap_section(dovecot, user, 'start = "all"\nmax_backlog = 1\n'))
    found = await inbound(live, 6)
    assert [e["data"]["subject"] for e in found] == [f"Backlogged {n}" for n in range(6)]
    counters = (await component(live))["counters"]
    assert counters["backlog"] == 0 and counters["normalized"] == 6
