"""Attachments: stored once by content, typed by what they are, within limits, erasable."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

from tests.conftest import LiveDaemon, auth, free_port
from tests.integration.test_smtp import inbound, mail, send, smtp_section

PDF = b"%PDF-1.4\n% a tiny but real-looking pdf\n" + bytes(range(256)) * 4
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def with_files(n: int, **kw: Any) -> Any:
    msg = mail("ann@example.org", "support@example.com", f"Files {n}", "See attached", **kw)
    msg.add_attachment(PDF, maintype="application", subtype="octet-stream", filename="bill.pdf")
    msg.add_attachment(
        PNG,
        maintype="image",
        subtype="png",
        filename="shot.png",
        disposition="inline",
        cid="<shot1@customer.example>",
    )
    return msg


async def fetch(live: LiveDaemon, attachment: str, token: bool = True) -> tuple[int, Any, bytes]:
    async with live.http.get(
        f"{live.url}/v1/attachments/{attachment}", headers=auth() if token else {}
    ) as resp:
        return resp.status, resp.headers, await resp.read()


async def test_attachments_are_typed_stored_once_and_served(
    make_daemon: Callable[..., Any],
) -> None:
    port = free_port()
    live = await make_daemon(smtp_section(port))
    for n in (1, 2):  # the same files twice
        await asyncio.to_thread(send, port, with_files(n), ["support@example.com"])
    first, second = await inbound(live, 2)
    pdf, png = first["data"]["attachments"]
    assert (pdf["filename"], pdf["content_type"], pdf["declared_type"]) == (
        "bill.pdf",
        "application/pdf",
        "application/octet-stream",
    )
    assert pdf["size"] == len(PDF) and pdf["stored"] is True and not pdf["inline"]
    assert png["inline"] is True and png["content_id"] == "shot1@customer.example"
    assert second["data"]["attachments"][0]["id"] == pdf["id"]
    with sqlite3.connect(live.daemon.store.path) as db:
        assert db.execute("SELECT count(*) FROM attachments").fetchone()[0] == 2

    status, headers, body = await fetch(live, pdf["id"])
    assert (status, body) == (200, PDF)
    assert headers["Content-Type"] == "application/pdf"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert (await fetch(live, pdf["id"], token=False))[0] == 401
    assert (await fetch(live, "att_" + "0" * 64))[0] == 404
    assert (await fetch(live, "nonsense"))[0] == 404


async def test_over_the_limit_is_listed_not_stored(make_daemon: Callable[..., Any]) -> None:
    port = free_port()
    live = await make_daemon(smtp_section(port) + '[ingest]\nmax_attachment_size = "100B"\n')
    await asyncio.to_thread(send, port, with_files(1), ["support@example.com"])
    (event,) = await inbound(live, 1)
    pdf, png = event["data"]["attachments"]
    assert pdf["stored"] is False and pdf["id"] is None and "max_attachment_size" in pdf["note"]
    assert png["stored"] is True  # the small one is kept; the message is never refused


async def test_erasure_removes_attachments_nobody_else_uses(
    make_daemon: Callable[..., Any],
) -> None:
    port = free_port()
    live = await make_daemon(smtp_section(port))
    await asyncio.to_thread(send, port, with_files(1), ["support@example.com"])
    (event,) = await inbound(live, 1)
    attachment = event["data"]["attachments"][0]["id"]
    status, _, _ = await live.post(f"/v1/contacts/{event['data']['contact_id']}/erase", None)
    assert status == 200
    assert (await fetch(live, attachment))[0] == 404
    erased = next(e for e in await live.stream() if e["id"] == event["id"])
    assert erased["data"]["attachments"] == []
