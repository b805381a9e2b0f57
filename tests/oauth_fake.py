"""A local OAuth 2.0 authorization server for the imap connector's tests.

It plays the mail provider's side: a token endpoint (RFC 6749 refresh-token
grant) the connector calls, and an introspection endpoint (RFC 7662) that a
private Dovecot's oauth2 passdb calls to decide an XOAUTH2 login. Both live in
one stdlib HTTP server on its own thread, so sync test code, asyncio code and
Dovecot's auth process (another OS process) can all reach it.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class IssuedToken:
    username: str
    expires_at: float  # time.monotonic()
    revoked: bool = False

    def active(self) -> bool:
        return not self.revoked and time.monotonic() < self.expires_at


class OAuthFake:
    """Token and introspection endpoints on 127.0.0.1 (a free port), for one user.

    Tokens are random and short-lived by choice of `expires_in`, so a test can
    watch a client refresh before expiry; `revoke_all()` turns every token
    issued so far inactive at once, as a provider does when a grant is pulled.
    """

    def __init__(
        self,
        username: str,
        *,
        client_id: str = "helpline-test-client",
        client_secret: str = "helpline-test-secret",
        refresh_token: str = "helpline-test-refresh",
        expires_in: int = 3600,
    ) -> None:
        self.username = username
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.expires_in = expires_in
        self.issued = 0  # access tokens handed out by the token endpoint
        self.introspections = 0  # introspection requests answered (Dovecot's or anyone's)
        self.token_requests = 0  # token endpoint calls, including refused ones
        self._tokens: dict[str, IssuedToken] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.token_url = ""
        self.introspection_url = ""

    # -- lifecycle -------------------------------------------------------

    def start(self) -> OAuthFake:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        base = f"http://127.0.0.1:{server.server_address[1]}"
        self.token_url = f"{base}/token"
        self.introspection_url = f"{base}/introspect"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OAuthFake:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- test controls ---------------------------------------------------

    def issue(self, username: str | None = None, expires_in: int | None = None) -> str:
        """Mint a token without the HTTP round trip (setup code that is not under test)."""
        token = secrets.token_urlsafe(24)
        lifetime = self.expires_in if expires_in is None else expires_in
        with self._lock:
            self._tokens[token] = IssuedToken(
                username or self.username, time.monotonic() + lifetime
            )
        return token

    def revoke_all(self) -> None:
        with self._lock:
            for token in self._tokens.values():
                token.revoked = True

    def is_active(self, token: str) -> bool:
        with self._lock:
            found = self._tokens.get(token)
            return found is not None and found.active()

    # -- endpoints (called from the server thread) -----------------------

    def _token_endpoint(
        self, form: dict[str, str], basic: tuple[str, str] | None
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.token_requests += 1
        # RFC 6749 2.3.1: client_secret_basic or client_secret_post.
        client_id, client_secret = basic or (
            form.get("client_id", ""),
            form.get("client_secret", ""),
        )
        if client_id != self.client_id or client_secret != self.client_secret:
            # RFC 6749 5.2: 401 only when the client authenticated by header.
            return (401 if basic else 400), {"error": "invalid_client"}
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("refresh_token") != self.refresh_token:
            return 400, {"error": "invalid_grant"}
        token = self.issue()
        with self._lock:
            self.issued += 1
        return 200, {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": "https://mail.example.test/imap",
        }

    def _introspect(self, token: str) -> dict[str, Any]:
        with self._lock:
            self.introspections += 1
            found = self._tokens.get(token)
            if found is None or not found.active():
                return {"active": False}
            return {
                "active": True,
                "username": found.username,
                "client_id": self.client_id,
                "token_type": "Bearer",
                "exp": int(time.time() + found.expires_at - time.monotonic()),
            }


def _handler_for(fake: OAuthFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: Dovecot's HTTP client reuses connections

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean

        def _form(self) -> dict[str, str]:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Pragma", "no-cache")
            self.end_headers()
            self.wfile.write(body)

        def _basic(self) -> tuple[str, str] | None:
            auth = self.headers.get("Authorization", "")
            if not auth.lower().startswith("basic "):
                return None
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            return unquote(user), unquote(password)

        def _bearer(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            return auth[7:].strip() if auth.lower().startswith("bearer ") else None

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            form = self._form()
            if path == "/token":
                self._reply(*fake._token_endpoint(form, self._basic()))
            elif path == "/introspect":
                # Dovecot introspection_mode=post sends the form field `token`.
                self._reply(200, fake._introspect(form.get("token") or self._bearer() or ""))
            else:
                self._reply(404, {"error": "not_found"})

        def do_GET(self) -> None:
            # Dovecot modes `auth` (Bearer header) and `get` (token appended to the URL).
            url = urlsplit(self.path)
            if url.path == "/introspect":
                token = self._bearer() or parse_qs(url.query).get("token", [""])[0]
                self._reply(200, fake._introspect(token))
            elif url.path.startswith("/introspect/"):
                self._reply(200, fake._introspect(unquote(url.path[len("/introspect/") :])))
            else:
                self._reply(404, {"error": "not_found"})

    return Handler
