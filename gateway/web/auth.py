"""Bearer tokens for /v1: a request is served only with one of the configured tokens.

Tokens are compared by their SHA-256 digest, so the lookup time does not
depend on how much of a wrong token matches a right one.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.config import HttpConfig, token_value

TOKEN_FILE = "api-token"
DEFAULT_TOKEN_NAME = "default"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who called: the token's name scopes its idempotency keys."""

    token_name: str
    trusted: bool


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    def __init__(self, tokens: dict[str, tuple[str, bool]]) -> None:
        self._by_digest = {
            _digest(secret): Caller(name, trusted) for name, (secret, trusted) in tokens.items()
        }

    @classmethod
    def from_config(cls, http: HttpConfig, state_dir: Path) -> TokenTable:
        if http.tokens:
            return cls({name: (token_value(t), t.trusted) for name, t in http.tokens.items()})
        return cls({DEFAULT_TOKEN_NAME: (ensure_generated_token(state_dir), False)})

    def check(self, token: str) -> Caller | None:
        """Whose token this is, or None (the dashboard's sign-in asks without a request)."""
        return self._by_digest.get(_digest(token))

    def caller(self, request: web.Request) -> Caller:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise web.HTTPUnauthorized(
                reason="Unauthorized",
                text="send the API token as 'Authorization: Bearer TOKEN'",
                headers={"WWW-Authenticate": 'Bearer realm="helpline"'},
            )
        caller = self.check(token.strip())
        if caller is None:
            raise web.HTTPUnauthorized(
                reason="Unauthorized",
                text="the bearer token is not one of the configured API tokens",
                headers={"WWW-Authenticate": 'Bearer realm="helpline", error="invalid_token"'},
            )
        return caller


def token_path(state_dir: Path) -> Path:
    return state_dir / TOKEN_FILE


def ensure_generated_token(state_dir: Path) -> str:
    """The state directory's generated token, created (mode 0600) on first use."""
    path = token_path(state_dir)
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its token
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(token + "\n")
    return token
