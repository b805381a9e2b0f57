"""Machine facts recorded with every result, so a figure can be read against where it ran."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import orjson


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def filesystem_of(path: Path) -> dict[str, str]:
    """`findmnt -T PATH`: the device, filesystem type and mount options behind PATH."""
    out = _run(["findmnt", "-J", "-T", str(path), "-o", "TARGET,SOURCE,FSTYPE,OPTIONS"])
    if not out:
        return {}
    try:
        found = orjson.loads(out)["filesystems"][0]
    except (orjson.JSONDecodeError, KeyError, IndexError):
        return {"raw": out}
    return {str(k): str(v) for k, v in found.items()}


def load_average() -> list[float]:
    """The 1/5/15-minute load: other work on a shared machine shows up here."""
    return [round(x, 2) for x in os.getloadavg()]


def git_commit(repo: Path) -> dict[str, object]:
    commit = _run(["git", "rev-parse", "HEAD"], cwd=repo)
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    return {"commit": commit, "dirty": bool(dirty)}


def facts(state_parent: Path, repo: Path) -> dict[str, object]:
    """Everything the JSON and RESULTS.md need to say where and on what a figure was taken."""
    return {
        "nproc": _run(["nproc"]) or str(os.cpu_count()),
        "cpu_model": cpu_model(),
        "mem_total_gib": mem_total_gib(),
        "kernel": platform.release(),
        "os": _run(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": sys.version.split()[0],
        "aiohttp": metadata.version("aiohttp"),
        "pydantic": metadata.version("pydantic"),
        "filesystem": filesystem_of(state_parent),
        "git": git_commit(repo),
        "loadavg_start": load_average(),
    }


def one_line(f: dict[str, object]) -> str:
    """The machine line of a RESULTS.md section."""
    fs = f.get("filesystem") or {}
    fs_text = f"{fs.get('fstype', '?')} on {fs.get('source', '?')}" if isinstance(fs, dict) else "?"
    return (
        f"{f['nproc']} CPU {f['cpu_model']}, {f['mem_total_gib']} GiB, {f['os']}, "
        f"kernel {f['kernel']}, Python {f['python']}, aiohttp {f['aiohttp']}, "
        f"state dir on {fs_text}"
    )
