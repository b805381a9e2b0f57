"""A real helpline daemon for one benchmark run: generated config, fresh state dir, pinned core.

The config sets only what the benchmark needs (the listen address and a named
token), so the store runs on its default durability (power-safe group commit),
exactly as an operator gets it out of the box.
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.procs import DAEMON_CORE, BenchError, Child, http_get, pinned, spawn, wait_ready

TOKEN_NAME = "bench"


def helpline_executable() -> Path:
    """The console script next to the running interpreter (.venv/bin/helpline)."""
    script = Path(sys.executable).with_name("helpline")
    if not script.exists():
        raise BenchError(
            f"{script} not found: run the bench with the project's virtualenv "
            "(.venv/bin/python -m bench ...) after `pip install -e '.[test]'`"
        )
    return script


def config_text(port: int, secret: str) -> str:
    """The whole TOML config: a loopback listener and one API token, nothing else."""
    return (
        f'[http]\nlisten = "127.0.0.1:{port}"\n\n[http.tokens.{TOKEN_NAME}]\nsecret = "{secret}"\n'
    )


@dataclass
class RunningDaemon:
    child: Child
    base_url: str
    token: str
    config_path: Path
    state_dir: Path

    def readyz(self) -> dict[str, object]:
        """The /readyz body (it carries store.head_offset for the durability check)."""
        status, body = http_get(f"{self.base_url}/readyz")
        data = orjson.loads(body)
        if not isinstance(data, dict):
            raise BenchError(f"/readyz answered {status} with {body[:200]!r}")
        data["http_status"] = status
        return data

    def metrics_text(self) -> str:
        """The Prometheus exposition, for the commit batch sizes behind the figures."""
        _, body = http_get(f"{self.base_url}/metrics")
        return body.decode("utf-8", errors="replace")


def start_daemon(work_dir: Path, port: int, core: int | None = DAEMON_CORE) -> RunningDaemon:
    """Write the config, start `helpline run` pinned to `core`, return once /readyz is 200."""
    state_dir = work_dir / "state"
    state_dir.mkdir()
    token = secrets.token_urlsafe(24)
    config_path = work_dir / "helpline.toml"
    config_path.write_text(config_text(port, token), encoding="utf-8")
    cmd = [
        str(helpline_executable()),
        "run",
        "--config",
        str(config_path),
        "--state-dir",
        str(state_dir),
        "--log-format",
        "json",
    ]
    child = spawn("helpline daemon", pinned(cmd, core), work_dir / "daemon.log")
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(child, f"{base_url}/readyz")
    except BaseException:
        child.stop()
        raise
    return RunningDaemon(child, base_url, token, config_path, state_dir)
