"""Supervised components inside a running daemon: restarts, classified failures, readiness."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import gateway.supervisor
from tests.conftest import LiveDaemon, until


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.supervisor, "BACKOFF_START", 0.02)


def probe(name: str, marker: Path, extra: str = "") -> str:
    return f'[connectors.{name}]\ntype = "tests.plugins:Probe"\nmarker = "{marker}"\n{extra}'


def marks(marker: Path) -> list[str]:
    return marker.read_text().splitlines() if marker.exists() else []


async def readiness(live: LiveDaemon) -> tuple[int, dict[str, Any]]:
    status, body, _ = await live.get("/readyz", token=None)
    return status, body


async def test_a_crashing_component_restarts_alone(
    make_daemon: Callable[..., Any], tmp_path: Path
) -> None:
    steady, flaky = tmp_path / "steady", tmp_path / "flaky"
    live = await make_daemon(
        probe("steady", steady, 'route = "/steady"\n')
        + probe("flaky", flaky, "crash_after = 0.05\n")
    )
    await until(lambda: marks(flaky).count("start flaky") >= 3)
    assert marks(steady) == ["start steady"]  # untouched by its neighbour's crashes
    assert "stop flaky" in marks(flaky)
    async with live.http.get(live.url + "/steady") as resp:
        assert (resp.status, await resp.text()) == (200, "hello from steady")
    status, body = await readiness(live)
    assert status == 200  # an outbound component's trouble never makes helpline unready
    assert body["components"]["connectors.flaky"]["last_error"].startswith("RuntimeError")
    async with live.http.get(live.url + "/metrics") as resp:
        assert 'helpline_component_errors_total{component="flaky"}' in await resp.text()


async def test_temporary_start_failures_retry_permanent_ones_stop(
    make_daemon: Callable[..., Any], tmp_path: Path
) -> None:
    later, never = tmp_path / "later", tmp_path / "never"
    live = await make_daemon(
        probe("later", later, 'fail_start = "temporary"\n')
        + probe("never", never, 'fail_start = "permanent"\n')
    )
    await until(lambda: len(marks(later)) >= 3)
    assert marks(never) == ["start never", "stop never"]  # tried once, not again
    status, body = await readiness(live)
    assert status == 200 and body["status"] == "degraded"
    never_health = body["components"]["connectors.never"]
    assert never_health["state"] == "failed"
    assert never_health["last_error"] == "wrong password for probe"
    assert body["components"]["connectors.later"]["state"] in ("retrying", "starting")


async def test_stopping_the_daemon_stops_components_and_their_routes(
    make_daemon: Callable[..., Any], tmp_path: Path
) -> None:
    marker = tmp_path / "m"
    live = await make_daemon(probe("p", marker, 'route = "/p"\n'))
    await live.daemon.stop()
    assert marks(marker) == ["start p", "stop p"]
    assert live.daemon.routes._routes == {}


async def test_a_component_whose_stop_hangs_is_abandoned_after_stop_timeout(
    make_daemon: Callable[..., Any], tmp_path: Path
) -> None:
    stuck, fine = tmp_path / "stuck", tmp_path / "fine"
    live = await make_daemon(
        '[daemon]\nstop_timeout = "200ms"\n'
        + probe("stuck", stuck, "hang_stop = true\n")
        + probe("fine", fine)
    )
    stopping = asyncio.create_task(live.daemon.stop())
    done, _ = await asyncio.wait({stopping}, timeout=10.0)  # not for ever
    assert stopping in done and stopping.exception() is None
    assert marks(stuck) == ["start stuck", "stop stuck"]  # its stop was cut short
    assert marks(fine) == ["start fine", "stop fine"]
