"""OAuth 2.0 access tokens for mailboxes whose provider turned basic auth off.

Microsoft 365 and Google take XOAUTH2 with a short-lived access token. helpline
holds the long-lived refresh token (from the config, a credential file or the
environment) and trades it at the provider's token endpoint (RFC 6749 §6),
again a margin before the access token expires, so a login never presents a
token that dies during the handshake.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable

import aiohttp
from pydantic import Field, SecretStr

from gateway.config_types import Secret, Section
from gateway.units import Duration


class OAuthConfig(Section):
    token_url: str = Field(pattern=r"^https?://")
    client_id: str
    client_secret: Secret | None = None
    refresh_token: Secret
    scope: str = ""
    # A token is renewed this long before it expires.
    refresh_margin: Duration = 300.0
    timeout: Duration = 30.0


class OAuthError(Exception):
    """The token endpoint refused or could not be reached; `permanent` when retrying cannot help."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class TokenSource:
    """Hands out a valid access token, renewing it through the refresh flow as needed."""

    def __init__(self, config: OAuthConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._refresh: SecretStr = config.refresh_token
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.refreshes = 0

    async def token(self) -> str:
        async with self._lock:
            if self._token is None or self._clock() >= self._expires - self._config.refresh_margin:
                return await self._renew()
            return self._token

    def forget(self) -> None:
        """Drop the cached token (the server refused it), so the next login renews it."""
        self._token = None

    async def _renew(self) -> str:
        cfg = self._config
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self._refresh.get_secret_value(),
            "client_id": cfg.client_id,
        }
        if cfg.client_secret is not None:
            form["client_secret"] = cfg.client_secret.get_secret_value()
        if cfg.scope:
            form["scope"] = cfg.scope
        started = self._clock()
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=cfg.timeout)) as http,
                http.post(cfg.token_url, data=form) as answer,
            ):
                body = await answer.json(content_type=None)
                status = answer.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise OAuthError(
                f"token endpoint {cfg.token_url}: {err or type(err).__name__}", False
            ) from err
        if status != 200 or not isinstance(body, dict) or "access_token" not in body:
            error = body.get("error", "") if isinstance(body, dict) else ""
            # invalid_grant / invalid_client: the refresh token or client is wrong or revoked.
            permanent = status in (400, 401) and error in ("invalid_grant", "invalid_client")
            raise OAuthError(
                f"token endpoint {cfg.token_url} answered {status} {error}".rstrip(), permanent
            )
        self._token = str(body["access_token"])
        self._expires = started + float(body.get("expires_in", 3600))
        if body.get("refresh_token"):  # a provider that rotates refresh tokens
            self._refresh = SecretStr(str(body["refresh_token"]))
        self.refreshes += 1
        return self._token


def xoauth2(user: str, token: str) -> str:
    """The SASL XOAUTH2 initial response (base64), as Google and Microsoft define it."""
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()
