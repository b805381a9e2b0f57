"""The OAuth refresh flow behind XOAUTH2 logins, against a local token endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.mail.oauth import OAuthConfig, OAuthError, TokenSource
from tests.conftest import free_port
from tests.oauth_fake import OAuthFake


@pytest.fixture
def fake() -> Iterator[OAuthFake]:
    with OAuthFake("box@example.test", expires_in=600) as server:
        yield server


def config(fake: OAuthFake, **overrides: object) -> OAuthConfig:
    values: dict[str, object] = {
        "token_url": fake.token_url,
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
        "refresh_token": fake.refresh_token,
        "refresh_margin": 60,
        **overrides,
    }
    return OAuthConfig.model_validate(values)


async def test_a_token_is_reused_until_the_margin_before_its_expiry(fake: OAuthFake) -> None:
    now = [1000.0]
    source = TokenSource(config(fake), clock=lambda: now[0])
    first = await source.token()
    assert fake.is_active(first)
    now[0] += 539  # 600 s token, 60 s margin: still good
    assert await source.token() == first
    assert fake.issued == 1
    now[0] += 2  # inside the margin: renewed before it can die mid-login
    second = await source.token()
    assert second != first and fake.is_active(second)
    assert fake.issued == 2


async def test_a_refused_token_is_forgotten_and_renewed(fake: OAuthFake) -> None:
    source = TokenSource(config(fake))
    first = await source.token()
    fake.revoke_all()
    source.forget()
    assert await source.token() != first
    assert fake.issued == 2


async def test_a_wrong_refresh_token_is_a_permanent_error(fake: OAuthFake) -> None:
    source = TokenSource(config(fake, refresh_token="revoked-long-ago"))
    with pytest.raises(OAuthError, match="400 invalid_grant") as caught:
        await source.token()
    assert caught.value.permanent


async def test_an_unreachable_endpoint_is_a_passing_error() -> None:
    cfg = OAuthConfig.model_validate(
        {
            "token_url": f"http://127.0.0.1:{free_port()}/token",
            "client_id": "c",
            "refresh_token": "r",
            "timeout": 2,
        }
    )
    with pytest.raises(OAuthError, match="token endpoint") as caught:
        await TokenSource(cfg).token()
    assert not caught.value.permanent
