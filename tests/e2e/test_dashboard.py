"""GET /dashboard in headless Chromium: the first-response report's figures after a sign-in.

A daemon with a scripted clock gets conversations on three channels over the
last days (answered within and past target, two customers still waiting);
the page, opened in a real browser, must show exactly the report's figures
as people read them, draw a chart with one line per channel, refresh in place,
and show no name to anyone without a session. The screenshot is kept in
tests/artifacts/dashboard.png.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.calls import CallStep
from gateway.first_response.report import build_report
from gateway.identity import Handles
from gateway.ingest import Inbound
from gateway.web.dashboard import COOKIE
from gateway.web.svg import Series, human_duration, human_share, line_chart
from tests.conftest import REPO, TOKENS, LiveDaemon

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
DAY = 86400.0
WAIT_MS = 10_000  # every browser wait is bounded by this
NAMES = ("Ann Answered", "Eve Late", "Bea Waiting", "Cy Visitor")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():  # noqa: ASYNC240 - one stat before the browser starts
        pytest.skip("chromium is not installed (tests/run installs the Debian package as root)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    from playwright.async_api import async_playwright

    async with async_playwright() as driver:
        chromium = await asyncio.wait_for(
            driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS), 30
        )
        try:
            yield chromium
        finally:
            await asyncio.wait_for(chromium.close(), 30)


async def message(
    live: LiveDaemon, clock: Clock, at: float, channel: str, who: str, *, name: str
) -> str:
    clock.now = at
    handles = Handles(visitor_id=who) if channel == "chat" else Handles(email=who)
    item = Inbound(
        channel=channel,  # type: ignore[arg-type]
        source="/connectors/test",
        handles=handles,
        name=name,
        text=f"Hello, this is {name}: where is my order?",
    )
    return (await live.daemon.ingestor.ingest(item)).conversation_id


async def reply(live: LiveDaemon, clock: Clock, at: float, conversation: str) -> None:
    clock.now = at
    status, answer, _ = await live.post(
        f"/v1/conversations/{conversation}/replies",
        {"text": "On it", "author": {"kind": "human", "name": "Sam"}},
    )
    assert status == 201, answer


async def call(live: LiveDaemon, clock: Clock, at: float, phase: str, **kw: Any) -> None:
    clock.now = at
    step = CallStep(
        source="/connectors/pbx",
        call_id="call-1",
        phase=phase,  # type: ignore[arg-type]
        direction="inbound",
        phone="+49 30 1234567",
        at=datetime.fromtimestamp(at, UTC),
        **kw,
    )
    await live.daemon.ingestor.ingest_call(step)


async def scripted(make_daemon: Callable[..., Any], http: str = "") -> tuple[LiveDaemon, Clock]:
    """Two days of answers on email, chat and the phone; two customers waiting now."""
    clock = Clock(T0 - 3 * DAY)
    live: LiveDaemon = await make_daemon(clock=clock, http=http)
    a, b = T0 - 2 * DAY, T0 - DAY
    ann = await message(live, clock, a, "email", "ann@example.org", name="Ann Answered")
    await reply(live, clock, a + 125, ann)  # 2 min 5 s: within the 3 min target
    dan = await message(live, clock, a + 1000, "chat", "visitor-dan", name="Dan Chat")
    await reply(live, clock, a + 1005, dan)  # 5 s
    await call(live, clock, a + 2000, "ringing")
    await call(live, clock, a + 2003, "answered", answered_by="human", agent="Sam")  # 3 s
    eve = await message(live, clock, b, "email", "eve@example.org", name="Eve Late")
    await reply(live, clock, b + 250, eve)  # 4 min 10 s: past target
    fay = await message(live, clock, b + 100, "chat", "visitor-fay", name="Fay Chat")
    await reply(live, clock, b + 120, fay)  # 20 s: past the 13 s target
    await message(live, clock, T0 - 600, "email", "bea@example.org", name="Bea Waiting")
    await message(live, clock, T0 - 5, "chat", "visitor-cy", name="Cy Visitor")
    clock.now = T0
    await live.daemon.first_response.tick()
    return live, clock


async def report_now(live: LiveDaemon, clock: Clock, days: int = 7) -> dict[str, Any]:
    core = live.daemon.config.core
    return await build_report(live.daemon.store, core, clock.now, since=clock.now - days * DAY)


async def sign_in(page: Any, live: LiveDaemon, token: str) -> Any:
    await page.goto(live.url + "/dashboard", timeout=WAIT_MS)
    await page.fill("#token", token, timeout=WAIT_MS)
    async with page.expect_navigation(timeout=WAIT_MS) as navigation:
        await page.click("button[type=submit]", timeout=WAIT_MS)
    return await navigation.value


async def text(page: Any, selector: str) -> str:
    return str(await page.locator(selector).inner_text(timeout=WAIT_MS)).strip()


async def test_the_dashboard_shows_the_reports_figures(
    make_daemon: Callable[..., Any], browser: Any
) -> None:
    live, clock = await scripted(make_daemon)
    report = await report_now(live, clock)
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    page.on(
        "console",
        # A refused sign-in (401) and the favicon (404) are logged as failed loads: expected.
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda err: problems.append(str(err)))

    # Without a session: the sign-in form, and not one customer's name.
    response = await page.goto(live.url + "/dashboard", timeout=WAIT_MS)
    assert response.status == 200
    assert "default-src 'none'" in response.headers["content-security-policy"]
    content = await page.content()
    assert await page.locator("#token").count() == 1
    assert not any(name in content for name in NAMES)
    assert await page.locator("#figures").count() == 0

    # A wrong token: refused with a clear message, still nothing shown.
    refused = await sign_in(page, live, "not-the-token")
    assert refused.status == 401
    assert "not accepted" in await text(page, "#sign-in-error")
    content = await page.content()
    assert not any(name in content for name in NAMES)

    # The right one: the report's figures, formatted for people.
    signed = await sign_in(page, live, TOKENS["main"])
    assert signed.status == 200 and signed.url == live.url + "/dashboard?days=7"
    (cookie,) = [c for c in await context.cookies() if c["name"] == COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
    assert cookie["path"] == "/dashboard" and cookie["expires"] > 0

    shown = {"email": "Email", "chat": "Chat", "voice": "Phone"}
    for channel in shown:
        figures = report["channels"][channel]
        section = f"section#channel-{channel}"
        expect = {
            "count": str(figures["count"]),
            "within_target": human_share(figures["within_target"]),
            "p50": human_duration(figures["p50"]),
            "p90": human_duration(figures["p90"]),
            "p99": human_duration(figures["p99"]),
            "mean": human_duration(figures["mean"]),
            "breaches": str(figures["breaches"]),
            "waiting": str(figures["waiting"]["count"]),
        }
        for key, value in expect.items():
            assert await text(page, f"{section} dd[data-figure={key}]") == value, (channel, key)
        stage = figures["stages"]["accepted_to_reply"]
        row = await text(page, f"{section} tr[data-stage=accepted_to_reply]")
        assert human_duration(stage["p50"]) in row and human_duration(stage["mean"]) in row
    # The same figures, as a person checks them by hand.
    assert await text(page, "#channel-email dd[data-figure=p50]") == "2 min 5 s"
    assert await text(page, "#channel-email dd[data-figure=p90]") == "4 min 10 s"
    assert await text(page, "#channel-email dd[data-figure=within_target]") == "50%"
    assert await text(page, "#channel-chat dd[data-figure=p90]") == "20 s"
    assert await text(page, "#channel-voice dd[data-figure=within_target]") == "100%"

    # The longest-waiting customers: name, age, and whether the target passed.
    bea = await text(page, "#channel-email table.waiting tbody tr")
    assert "Bea Waiting" in bea and "10 min" in bea and "Past target" in bea
    cy = await text(page, "#channel-chat table.waiting tbody tr")
    assert "Cy Visitor" in cy and "5 s" in cy and "Within target" in cy
    assert "Nothing in this period on: Web form, API." in await text(page, "p.quiet")

    # The charts: one line per channel shown, and per channel p50/p90/p99 against the target.
    series = page.locator("svg#chart-overview g.series")
    assert await series.count() == len(shown)
    keys = {await series.nth(i).get_attribute("data-series") for i in range(len(shown))}
    assert keys == set(shown)
    for channel in shown:
        lines = page.locator(f"svg#chart-{channel} g.series")
        assert [await lines.nth(i).get_attribute("data-series") for i in range(3)] == [
            "p50",
            "p90",
            "p99",
        ]
        assert await page.locator(f"svg#chart-{channel} g.reference").count() == 1
    box = await page.locator("svg#chart-email").bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=True, timeout=WAIT_MS)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert problems == []  # no script error, no Content-Security-Policy violation
    await context.close()


async def test_the_figures_refresh_in_place_and_sign_out_ends_the_session(
    make_daemon: Callable[..., Any], browser: Any
) -> None:
    live, clock = await scripted(make_daemon)
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    await page.clock.install()  # the page's timers, run forward by the test
    await sign_in(page, live, TOKENS["other"])
    assert "Bea Waiting" in await text(page, "#channel-email table.waiting")
    await page.evaluate("window.notReloaded = true")
    before = await text(page, "#channel-email dd[data-figure=count]")

    report = await report_now(live, clock)
    (oldest,) = report["channels"]["email"]["waiting"]["oldest"]
    await reply(live, clock, T0 + 60, oldest["conversation_id"])
    await live.daemon.first_response.tick()

    await page.clock.run_for(16_000)  # past one refresh interval
    await page.locator("text=Bea Waiting").wait_for(state="detached", timeout=WAIT_MS)
    assert await text(page, "#channel-email dd[data-figure=count]") == str(int(before) + 1)
    assert await page.evaluate("window.notReloaded === true")  # swapped in, not reloaded

    stolen = next(c for c in await context.cookies() if c["name"] == COOKIE)["value"]
    async with page.expect_navigation(timeout=WAIT_MS):
        await page.click("form.sign-out button")
    assert await page.locator("#token").count() == 1
    assert "Eve Late" not in await page.content()
    # The cookie is worth nothing after signing out, even replayed by someone who kept it.
    async with live.http.get(
        live.url + "/dashboard/figures", headers={"Cookie": f"{COOKIE}={stolen}"}
    ) as resp:
        assert resp.status == 401 and "Eve Late" not in await resp.text()
    await context.close()


async def test_it_works_without_javascript(make_daemon: Callable[..., Any], browser: Any) -> None:
    live, _ = await scripted(make_daemon)
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    await sign_in(page, live, TOKENS["main"])
    assert "Bea Waiting" in await text(page, "#channel-email table.waiting")
    await page.check("input[name=business_hours]")
    await page.select_option("#days", "14")
    async with page.expect_navigation(timeout=WAIT_MS):
        await page.click("form.controls button")
    assert page.url.endswith("/dashboard?days=14&business_hours=1")
    assert "Bea Waiting" in await text(page, "#channel-email table.waiting")
    assert "business hours" in await text(page, "p.period")
    await context.close()


async def post_sign_in(live: LiveDaemon, token: str, **headers: str) -> Any:
    """The sign-in form's POST as a browser on the dashboard's page sends it."""
    headers = {"Origin": live.url, **headers}
    async with live.http.post(
        live.url + "/dashboard/sign-in",
        data={"token": token, "days": "7", "business_hours": "0"},
        headers={k: v for k, v in headers.items() if v},
        allow_redirects=False,
    ) as resp:
        return resp.status, await resp.text(), resp.headers


async def page_with(live: LiveDaemon, cookie: str, path: str = "/dashboard") -> tuple[int, str]:
    async with live.http.get(
        live.url + path, headers={"Cookie": f"{COOKIE}={cookie}"}, allow_redirects=False
    ) as resp:
        return resp.status, await resp.text()


def session_cookie(headers: Any) -> str:
    (line,) = [h for h in headers.getall("Set-Cookie") if h.startswith(COOKIE + "=")]
    return str(line)


async def test_the_session_cookie_cannot_be_forged_and_expires(
    make_daemon: Callable[..., Any],
) -> None:
    live, clock = await scripted(make_daemon)
    status, _, headers = await post_sign_in(live, TOKENS["main"])
    assert status == 303 and headers["Location"] == "/dashboard?days=7"
    line = session_cookie(headers)
    assert "HttpOnly" in line and "SameSite=Strict" in line and "Path=/dashboard" in line
    assert "Max-Age=43200" in line and "Secure" not in line  # plain HTTP on loopback
    value = line.split(";")[0].split("=", 1)[1]
    assert (await page_with(live, value))[1].count("Bea Waiting") == 1

    sid, expires, mac = value.split(".")

    def changed(part: str) -> str:
        return part[:-1] + ("B" if part.endswith("A") else "A")

    forged = [
        f"{sid}.{int(expires) + 86400}.{mac}",  # a longer life
        f"{changed(sid)}.{expires}.{mac}",  # another session
        f"{sid}.{expires}.{changed(mac)}",
        "",
        "garbage",
        f"{sid}.{'9' * 5000}.{mac}",
    ]
    for cookie in forged:
        status, body = await page_with(live, cookie)
        assert status == 200 and 'id="token"' in body and "Bea Waiting" not in body, cookie
        status, body = await page_with(live, cookie, "/dashboard/figures")
        assert status == 401 and "Bea Waiting" not in body

    clock.now = T0 + 12 * 3600 + 1  # [http] dashboard_session passed
    status, body = await page_with(live, value)
    assert 'id="token"' in body and "Bea Waiting" not in body


async def test_sign_in_is_refused_from_other_origins_and_for_wrong_tokens(
    make_daemon: Callable[..., Any],
) -> None:
    live, _ = await scripted(make_daemon)
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "", "Referer": "https://evil.example/dashboard"},
        {"Origin": ""},  # neither Origin nor Referer: not from our page
    ):
        status, body, got = await post_sign_in(live, TOKENS["main"], **headers)
        assert status == 403 and "not sent from helpline" in body, headers
        assert COOKIE not in got.get("Set-Cookie", "")
    status, _, got = await post_sign_in(live, TOKENS["main"], Origin="", Referer=live.url + "/x")
    assert status == 303 and COOKIE in got["Set-Cookie"]  # a Referer of ours will do

    for wrong, message in (("", "Enter the token"), ("x" * 5000, "not accepted")):
        status, body, got = await post_sign_in(live, wrong)
        assert status in (400, 401) and message in body and "Bea Waiting" not in body
        assert "Set-Cookie" not in got
    async with live.http.post(
        live.url + "/dashboard/sign-out", headers={"Origin": "https://evil.example"}
    ) as resp:
        assert resp.status == 403
    # The page's headers: nothing from elsewhere may run, nothing is cached.
    async with live.http.get(live.url + "/dashboard") as resp:
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert resp.headers["Cache-Control"] == "no-store"
    async with live.http.get(live.url + "/dashboard?days=zero") as resp:
        assert resp.status == 400 and "days must be" in await resp.text()
    async with live.http.get(live.url + "/dashboard/dashboard.js") as resp:
        assert resp.status == 200 and resp.content_type == "text/javascript"


async def test_a_dedicated_dashboard_token_and_tls_behind_a_trusted_proxy(
    make_daemon: Callable[..., Any],
) -> None:
    live, _ = await scripted(
        make_daemon,
        http='dashboard_token = "lead-token-0123456789"\ntrusted_proxies = ["127.0.0.1/32"]\n'
        'dashboard_session = "1h"\n',
    )
    status, body, _ = await post_sign_in(live, TOKENS["main"])  # an API token is not enough
    assert status == 401 and "not accepted" in body
    tls = {"X-Forwarded-Proto": "https", "Origin": "https://" + live.url.split("://")[1]}
    status, _, headers = await post_sign_in(live, "lead-token-0123456789", **tls)
    assert status == 303
    line = session_cookie(headers)
    assert "Secure" in line and "Max-Age=3600" in line
    status, body = await page_with(live, line.split(";")[0].split("=", 1)[1])
    assert status == 200 and "Bea Waiting" in body
    # The dashboard's token is not an API token.
    async with live.http.get(
        live.url + "/v1/conversations",
        headers={"Authorization": "Bearer lead-token-0123456789"},
    ) as resp:
        assert resp.status == 401


def test_durations_and_shares_read_as_people_write_them() -> None:
    cases = {
        None: "\N{EN DASH}",
        0.0: "0 s",
        0.25: "250 ms",
        4.0: "4 s",
        4.25: "4.2 s",
        13.0: "13 s",
        59.6: "1 min",
        125.0: "2 min 5 s",
        180.0: "3 min",
        3600.0: "1 h",
        3 * 3600 + 600.0: "3 h 10 min",
        2 * 86400 + 3600.0: "2 d 1 h",
    }
    assert {k: human_duration(k) for k in cases} == cases
    assert [human_share(s) for s in (None, 0.0, 0.875, 1.0, 2 / 3)] == [
        "\N{EN DASH}",
        "0%",
        "87.5%",
        "100%",
        "66.7%",
    ]


def test_a_chart_breaks_its_line_on_days_without_figures() -> None:
    days = [date(2026, 11, d) for d in (20, 21, 22, 23)]
    svg = line_chart(
        "c",
        "A <chart>",
        "desc",
        days,
        [Series("p50", "median", [10.0, None, 20.0, 30.0], "#000")],
        reference=13.0,
        reference_label="target 13 s",
    )
    assert svg.count("<path") == 1 and svg.count("<circle") == 3  # 22-23 joined, 20 alone
    assert "A &lt;chart&gt;" in svg and "target 13 s" in svg
    assert "median, 2026-11-20: 10 s" in svg


async def test_behind_a_proxy_under_a_path_the_links_and_cookie_follow_public_url(
    make_daemon: Callable[..., Any],
) -> None:
    live: LiveDaemon = await make_daemon(
        http='public_url = "https://support.example.com/helpline"\n'
    )
    status, _, headers = await post_sign_in(
        live, TOKENS["main"], Origin="https://support.example.com"
    )
    assert status == 303 and headers["Location"] == "/helpline/dashboard?days=7"
    line = session_cookie(headers)
    assert "Path=/helpline/dashboard" in line and "Secure" in line
    status, body = await page_with(live, line.split(";")[0].split("=", 1)[1])
    assert status == 200 and 'href="/helpline/dashboard/dashboard.css"' in body
    assert 'data-figures="/helpline/dashboard/figures?days=7"' in body
    assert "No first responses and no one waiting in this period." in body
