"""GET /dashboard: the first-response report as a page a support lead reads in the morning.

The page shows customers' names, so it asks for a token first: `[http]
dashboard_token`, or any API token when none is set. Signing in opens a
session held in this process (so signing out, a changed token or a restart
ends it) and gives the browser a cookie naming it, signed with HMAC-SHA256
under a key made at start: HttpOnly, SameSite=Strict, Secure when the browser
reached helpline over TLS, and expiring after `[http] dashboard_session`.
Every request with it checks the token again. The forms that change state
(sign-in, sign-out) are POSTs accepted only from the dashboard's own origin.
No page or fragment with figures is served without a session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from html import escape
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from yarl import URL

from gateway.config import secret_value
from gateway.first_response.report import build_report
from gateway.web import dashboard_assets as assets
from gateway.web.context import WebContext, context
from gateway.web.dashboard_view import figures

log = structlog.get_logger("gateway.web.dashboard")

COOKIE = "helpline_dashboard"
MAX_SESSIONS = 1000
MAX_TOKEN_LENGTH = 1024
DAY = 86400.0
DAYS = (1, 7, 14, 30, 90)
MAX_DAYS = 366
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # keeps Origin on our own POSTs
    "X-Frame-Options": "DENY",
}


@dataclass(slots=True)
class Session:
    token: str
    expires: int


class Sessions:
    """Signed-in browsers of this process: the cookie names one, the HMAC proves we made it."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)
        self._open: dict[str, Session] = {}

    def _mac(self, sid: str, expires: int) -> str:
        mac = hmac.new(self._key, f"{sid}.{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def open(self, token: str, now: float, lifetime: float) -> str:
        for sid in [s for s, held in self._open.items() if held.expires <= now]:
            del self._open[sid]
        while len(self._open) >= MAX_SESSIONS:  # the oldest goes first
            del self._open[next(iter(self._open))]
        sid, expires = secrets.token_urlsafe(24), int(now + lifetime)
        self._open[sid] = Session(token, expires)
        return f"{sid}.{expires}.{self._mac(sid, expires)}"

    def find(self, cookie: str | None, now: float) -> Session | None:
        sid, expires, mac = _split(cookie)
        if not sid or not hmac.compare_digest(mac, self._mac(sid, expires)):
            return None
        held = self._open.get(sid)
        if held is None or held.expires != expires or expires <= now:
            return None
        return held

    def close(self, cookie: str | None) -> None:
        sid, expires, mac = _split(cookie)
        if sid and hmac.compare_digest(mac, self._mac(sid, expires)):
            self._open.pop(sid, None)


def _split(cookie: str | None) -> tuple[str, int, str]:
    sid, _, rest = (cookie or "").partition(".")
    expires, _, mac = rest.partition(".")
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12 and mac):
        return "", 0, ""
    return sid, int(expires), mac


SESSIONS: web.AppKey[Sessions] = web.AppKey("dashboard_sessions", Sessions)


def token_accepted(ctx: WebContext, token: str) -> bool:
    """The dashboard token when one is configured, else any API token (the /v1 table)."""
    wanted = secret_value(ctx.config.http.dashboard_token)
    if wanted is not None:
        digest = hashlib.sha256(token.encode()).digest()
        return hmac.compare_digest(digest, hashlib.sha256(wanted.encode()).digest())
    return ctx.tokens.check(token) is not None


def signed_in(request: web.Request) -> bool:
    ctx = context(request)
    held = request.app[SESSIONS].find(request.cookies.get(COOKIE), ctx.ingestor.now())
    return held is not None and token_accepted(ctx, held.token)


@dataclass(frozen=True, slots=True)
class View:
    """What the page shows: the last `days` days, in business hours or not."""

    days: int = 7
    business_hours: bool = False

    @classmethod
    def parse(cls, values: Mapping[str, str]) -> View:
        raw = values.get("days", "7").strip() or "7"
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_DAYS:
            raise ValueError(f"days must be a whole number of days from 1 to {MAX_DAYS}")
        hours = values.get("business_hours", "0").strip().lower()
        if hours not in ("", "0", "1", "on", "true", "false"):
            raise ValueError("business_hours is 1 (count business hours) or 0")
        return cls(int(raw), hours in ("1", "on", "true"))

    def query(self) -> str:
        return f"days={self.days}" + ("&business_hours=1" if self.business_hours else "")


def _prefix(ctx: WebContext) -> str:
    """The path before /dashboard when a proxy serves helpline under one ([http] public_url)."""
    return urlsplit(ctx.config.http.public_url).path.rstrip("/")


def _html(body: str, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={**HEADERS, "Cache-Control": "no-store", **headers},
    )


def _shell(ctx: WebContext, title: str, header: str, main: str, script: bool = False) -> str:
    base = _prefix(ctx) + "/dashboard"
    js = f'<script src="{base}/dashboard.js" defer></script>' if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{escape(title)}</title><link rel="stylesheet" href="{base}/dashboard.css">{js}'
        f"</head><body>{header}{main}</body></html>"
    )


def sign_in_page(ctx: WebContext, view: View, message: str = "", status: int = 200) -> web.Response:
    base = _prefix(ctx) + "/dashboard"
    error = (
        f'<p class="error" role="alert" id="sign-in-error">{escape(message)}</p>' if message else ""
    )
    described = ' aria-describedby="sign-in-error" aria-invalid="true"' if message else ""
    hours = "1" if view.business_hours else "0"
    main = (
        '<main class="sign-in"><h1>helpline: first response</h1>'
        "<p>This dashboard shows customers' names. Sign in with the dashboard token "
        "your helpline operator gave you.</p>"
        f'{error}<form method="post" action="{base}/sign-in">'
        '<label for="token">Token</label>'
        f'<input id="token" name="token" type="password" required autocomplete="current-password"'
        f' maxlength="{MAX_TOKEN_LENGTH}"{described}>'
        f'<input type="hidden" name="days" value="{view.days}">'
        f'<input type="hidden" name="business_hours" value="{hours}">'
        '<button type="submit">Sign in</button></form></main>'
    )
    return _html(_shell(ctx, "Sign in: helpline dashboard", "", main), status)


def _header(ctx: WebContext, view: View) -> str:
    base = _prefix(ctx) + "/dashboard"
    choices = sorted({*DAYS, view.days})
    options = "".join(
        f'<option value="{d}"{" selected" if d == view.days else ""}>'
        f"{'last day' if d == 1 else f'last {d} days'}</option>"
        for d in choices
    )
    checked = " checked" if view.business_hours else ""
    return (
        '<header class="top"><h1>First response</h1>'
        f'<form class="controls" method="get" action="{base}">'
        f'<label for="days">Period</label><select id="days" name="days">{options}</select>'
        f'<label><input type="checkbox" name="business_hours" value="1"{checked}> '
        'Count business hours</label><button type="submit">Show</button></form>'
        f'<form class="sign-out" method="post" action="{base}/sign-out">'
        '<button type="submit">Sign out</button></form></header>'
    )


async def _figures(ctx: WebContext, view: View) -> str:
    now = ctx.ingestor.now()
    report = await build_report(
        ctx.store,
        ctx.config,
        now,
        since=now - view.days * DAY,
        business_hours=view.business_hours,
    )
    return figures(report, ctx.config.conversations.ticket_token)


def _bad_view(ctx: WebContext, err: ValueError) -> web.Response:
    main = (
        '<main class="sign-in"><h1>Not a dashboard view</h1>'
        f'<p class="error">{escape(str(err))}</p>'
        f'<p><a href="{_prefix(ctx)}/dashboard">Show the last 7 days</a></p></main>'
    )
    return _html(_shell(ctx, "helpline dashboard", "", main), 400)


async def dashboard(request: web.Request) -> web.Response:
    ctx = context(request)
    try:
        view = View.parse(request.query)
    except ValueError as err:
        return _bad_view(ctx, err)
    if not signed_in(request):
        return sign_in_page(ctx, view)
    url = f"{_prefix(ctx)}/dashboard/figures?{view.query()}"
    main = (
        f'<main id="dashboard" data-figures="{escape(url)}" data-interval="{assets.REFRESH_MS}">'
        '<p id="refresh-status" class="refresh" role="status"></p>'
        f"{await _figures(ctx, view)}"
        "<noscript><p>Reload the page for newer figures.</p></noscript></main>"
    )
    page = _shell(ctx, "First response: helpline", _header(ctx, view), main, script=True)
    return _html(page)


async def figures_fragment(request: web.Request) -> web.Response:
    ctx = context(request)
    if not signed_in(request):
        return _html("sign in again at /dashboard", 401)
    try:
        view = View.parse(request.query)
    except ValueError as err:
        return _html(escape(str(err)), 400)
    return _html(await _figures(ctx, view))


def _origin(value: str) -> URL | None:
    try:
        url = URL(value)
        return url.origin() if url.absolute else None
    except ValueError:
        return None


def same_origin(request: web.Request) -> bool:
    """A POST from a page of ours: its Origin (else Referer) is helpline's public or own origin."""
    ctx = context(request)
    ours = {_origin(ctx.proxies.base_url(request)), _origin(f"{request.scheme}://{request.host}")}
    for header in ("Origin", "Referer"):
        value = request.headers.get(header)
        if value:
            return _origin(value) in ours - {None}
    return False


def _secure(request: web.Request) -> bool:
    return request.secure or context(request).proxies.base_url(request).startswith("https://")


def _redirect(ctx: WebContext, view: View | None = None) -> web.Response:
    location = f"{_prefix(ctx)}/dashboard" + (f"?{view.query()}" if view else "")
    return web.Response(status=303, headers={**HEADERS, "Location": location})


def _refused_origin(ctx: WebContext) -> web.Response:
    main = (
        '<main class="sign-in"><h1>Refused</h1><p class="error">This form was not sent from '
        "helpline's own dashboard page, so it was not accepted.</p>"
        f'<p><a href="{_prefix(ctx)}/dashboard">Open the dashboard</a></p></main>'
    )
    return _html(_shell(ctx, "helpline dashboard", "", main), 403)


async def sign_in(request: web.Request) -> web.Response:
    ctx = context(request)
    if not same_origin(request):
        return _refused_origin(ctx)
    form = await request.post()
    try:
        view = View.parse({k: v for k, v in form.items() if isinstance(v, str)})
    except ValueError:
        view = View()
    token = form.get("token")
    token = token.strip() if isinstance(token, str) else ""
    client = ctx.proxies.client(request)
    if not token:
        return sign_in_page(ctx, view, "Enter the token to sign in.", 400)
    if len(token) > MAX_TOKEN_LENGTH or not token_accepted(ctx, token):
        log.warning("dashboard.sign_in_refused", client=client)
        return sign_in_page(
            ctx, view, "That token is not accepted here. Check it and try again.", 401
        )
    cookie = request.app[SESSIONS].open(
        token, ctx.ingestor.now(), ctx.config.http.dashboard_session
    )
    response = _redirect(ctx, view)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(ctx.config.http.dashboard_session),
        path=_prefix(ctx) + "/dashboard",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )
    log.info("dashboard.signed_in", client=client)
    return response


async def sign_out(request: web.Request) -> web.Response:
    ctx = context(request)
    if not same_origin(request):
        return _refused_origin(ctx)
    request.app[SESSIONS].close(request.cookies.get(COOKIE))
    response = _redirect(ctx)
    response.del_cookie(
        COOKIE,
        path=_prefix(ctx) + "/dashboard",
        secure=_secure(request),
        httponly=True,
        samesite="Strict",
    )
    return response


async def back_to_dashboard(request: web.Request) -> web.Response:
    return _redirect(context(request))


def _asset(text: str, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    tag = assets.etag(text)

    async def serve(request: web.Request) -> web.Response:
        headers = {**HEADERS, "ETag": tag, "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == tag:
            return web.Response(status=304, headers=headers)
        return web.Response(text=text, content_type=content_type, charset="utf-8", headers=headers)

    return serve


def add_routes(app: web.Application) -> None:
    app[SESSIONS] = Sessions()
    app.router.add_get("/dashboard", dashboard)
    app.router.add_get("/dashboard/figures", figures_fragment)
    app.router.add_post("/dashboard/sign-in", sign_in)
    app.router.add_get("/dashboard/sign-in", back_to_dashboard)
    app.router.add_post("/dashboard/sign-out", sign_out)
    app.router.add_get("/dashboard/dashboard.css", _asset(assets.CSS, "text/css"))
    app.router.add_get("/dashboard/dashboard.js", _asset(assets.JS, "text/javascript"))
