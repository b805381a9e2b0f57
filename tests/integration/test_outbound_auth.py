"""smtp_out logging in to its relay: XOAUTH2 with tokens from a refresh flow, and a
refused login that is helpline's problem, never the customer's failed delivery."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.conftest import free_port, until
from tests.integration.test_outbound import Relay, customer_writes, daemon_with_mail
from tests.oauth_fake import OAuthFake

USER = "support@example.com"
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


class AuthRelay(Relay):
    """A relay that wants a login: XOAUTH2 with a token the OAuth server calls active,
    or PLAIN/LOGIN with one password."""

    def __init__(self, oauth: OAuthFake) -> None:
        super().__init__()
        self.oauth = oauth
        self.logins: list[str] = []

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        fields = base64.b64decode(args[1]).decode().split("\x01")
        user = fields[0].removeprefix("user=")
        token = next(f for f in fields if f.startswith("auth=")).removeprefix("auth=Bearer ")
        ok = user == USER and self.oauth.is_active(token)
        self.logins.append(f"xoauth2:{user}:{'ok' if ok else 'refused'}")
        return AuthResult(success=ok, handled=False)


def _password_check(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.password == b"relay-secret"
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def oauth() -> Iterator[OAuthFake]:
    with OAuthFake(USER) as fake:
        yield fake


@pytest.fixture
async def auth_relay(oauth: OAuthFake) -> AsyncIterator[tuple[AuthRelay, int]]:
    sink, port = AuthRelay(oauth), free_port()
    loop = asyncio.get_running_loop()

    def make() -> SMTP:
        return SMTP(
            sink,
            hostname="relay.test",
            auth_required=True,
            auth_require_tls=False,  # loopback test relay; production relays use TLS
            authenticator=_password_check,
        )

    server = await loop.create_server(make, "127.0.0.1", port)
    yield sink, port
    server.close()
    await server.wait_closed()


async def test_a_reply_goes_out_through_a_relay_that_takes_xoauth2(
    make_daemon: Callable[..., Any], auth_relay: tuple[AuthRelay, int], oauth: OAuthFake
) -> None:
    sink, relay_port = auth_relay
    out = (
        f'username = "{USER}"\nauth = "xoauth2"\n'
        f'[connectors.out.oauth]\ntoken_url = "{oauth.token_url}"\n'
        f'client_id = "{oauth.client_id}"\nclient_secret = "{oauth.client_secret}"\n'
        f'refresh_token = "{oauth.refresh_token}"\n'
    )
    live, port = await daemon_with_mail(make_daemon, relay_port, out=out)
    first = await customer_writes(live, port)
    await live.post(f"/v1/conversations/{first['subject']}/replies", {"text": "On its way"})
    await until(lambda: len(sink.received) == 1)
    assert sink.logins == [f"xoauth2:{USER}:ok"]
    assert oauth.issued == 1
    assert sink.received[0]["To"] == "ann@example.org"


async def test_a_refused_relay_login_is_retried_not_blamed_on_the_customer(
    make_daemon: Callable[..., Any], auth_relay: tuple[AuthRelay, int]
) -> None:
    sink, relay_port = auth_relay
    out = f'username = "{USER}"\npassword = "an-old-password"\nretry_cap = 1\n'
    live, port = await daemon_with_mail(make_daemon, relay_port, out=out)
    first = await customer_writes(live, port)
    await live.post(f"/v1/conversations/{first['subject']}/replies", {"text": "Hello"})
    health: dict[str, Any] = {}
    for _ in range(100):
        _, body, _ = await live.get("/readyz", token=None)
        health = body["components"]["connectors.out"]
        if health["state"] == "degraded":
            break
        await asyncio.sleep(0.05)
    assert health["state"] == "degraded"
    assert "relay refused the login: 535" in health["last_error"]
    assert "an-old-password" not in health["last_error"]
    types = [e["type"] for e in await live.stream()]
    assert "helpline.message.delivery_failed.v1" not in types  # the address is fine
    assert sink.received == []
