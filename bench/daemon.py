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


def config_text(port: int, secret: str, extra: str = "") -> str:
    """The whole TOML config: a loopback listener and one API token, then `extra` (more
    TOML sections a benchmark needs, such as a connector; empty: nothing else)."""
    text = (
        f'[http]\nlisten = "127.0.0.1:{port}"\n\n[http.tokens.{TOKEN_NAME}]\nsecret = "{secret}"\n'
    )
    return f"{text}\n{extra.strip()}\n" if extra.strip() else text


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


def start_daemon(
    work_dir: Path,
    port: int,
    core: int | None = DAEMON_CORE,
    *,
    state_dir: Path | None = None,
    deadline: float = 30.0,
    extra_config: str = "",
) -> RunningDaemon:
    """Write the config, start `helpline run` pinned to `core`, return once /readyz is 200.

    The state dir is a fresh `work_dir/state` unless `state_dir` names one that
    already holds a store; `deadline` is how many seconds the daemon has to get ready;
    `extra_config` is TOML appended to the generated config (see config_text).
    """
    if state_dir is None:
        state_dir = work_dir / "state"
        state_dir.mkdir()
    token = secrets.token_urlsafe(24)
    config_path = work_dir / "helpline.toml"
    config_path.write_text(config_text(port, token, extra_config), encoding="utf-8")
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
        wait_ready(child, f"{base_url}/readyz", deadline=deadline)
    except BaseException:
        child.stop()
        raise
    return RunningDaemon(child, base_url, token, config_path, state_dir)


def commit_stats(metrics: str) -> dict[str, float]:
    """Commit count, writes and seconds from the daemon's Prometheus text."""
    wanted = {
        "helpline_commit_batch_size_count": "commits",
        "helpline_commit_batch_size_sum": "writes",
        "helpline_commit_seconds_sum": "commit_seconds",
    }
    found: dict[str, float] = {}
    for line in metrics.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            found[wanted[name]] = float(value)
    return found


def commit_delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Group-commit figures for the measured run alone (warm-up subtracted)."""
    out = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in ("commits", "writes")}
    out["commit_seconds"] = round(
        after.get("commit_seconds", 0.0) - before.get("commit_seconds", 0.0), 4
    )
    commits = out["commits"]
    out["mean_batch"] = round(out["writes"] / commits, 2) if commits else 0.0
    out["mean_commit_ms"] = round(out["commit_seconds"] / commits * 1000, 3) if commits else 0.0
    return out


def read_log(path: Path, limit: int = 5) -> tuple[dict[str, int], list[str]]:
    """Daemon log lines per level, and the first warnings or errors (worth reading)."""
    counts: dict[str, int] = {}
    notable: list[str] = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return counts, notable
    for raw in lines:
        try:
            entry = orjson.loads(raw)
            level = str(entry.get("level", "?")) if isinstance(entry, dict) else "?"
        except orjson.JSONDecodeError:
            level = "unparsed"
        counts[level] = counts.get(level, 0) + 1
        if level in ("warning", "error", "critical", "unparsed") and len(notable) < limit:
            notable.append(raw.decode("utf-8", errors="replace")[:400])
    return counts, notable


def commit_summary(mean_batch: float, mean_commit_ms: float) -> str:
    """Group-commit figures as the check lines show them."""
    return f"{mean_batch:g} writes/commit, {mean_commit_ms:g} ms/commit"


def ending_warnings(
    name: str, exit_code: int | None, stopped_by: str, log_warnings: list[str]
) -> list[str]:
    """Warnings about how a stopped daemon ended and what its log says (`name`: which run)."""
    warnings: list[str] = []
    if exit_code != 0 or stopped_by != "SIGTERM":
        warnings.append(
            f"{name}: the daemon ended with status {exit_code} ({stopped_by}) after SIGTERM"
        )
    warnings.extend(f"{name}: daemon log: {line}" for line in log_warnings)
    return warnings


def slow_commits(metrics: str) -> int:
    """Commits that took longer than 100 ms, from the commit-time histogram (a busy disk)."""
    total = under = 0.0
    for line in metrics.splitlines():
        name, _, value = line.partition(" ")
        if name == "helpline_commit_seconds_count":
            total = float(value)
        elif name == 'helpline_commit_seconds_bucket{le="0.1"}':
            under = float(value)
    return round(total - under)
