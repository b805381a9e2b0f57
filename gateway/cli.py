"""The `helpline` command: the only module that prints or chooses an exit status.

Exit statuses: 0 success, 1 a runtime failure, 2 a usage error, 78 (EX_CONFIG)
a configuration problem, so that systemd can be told not to restart in a loop
on a config that will never start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from gateway import __version__, cli_backends, cli_ops
from gateway.cli_report import human_seconds, report_csv, report_table
from gateway.config import CHANNELS, Config, ConfigError, load_config, token_value
from gateway.store import SchemaTooNew, StoreError
from gateway.web.auth import token_path

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 2
EX_CONFIG = 78


def default_state_dir() -> Path:
    """--state-dir, else $STATE_DIRECTORY (systemd), else $XDG_STATE_HOME/helpline."""
    systemd = os.environ.get("STATE_DIRECTORY", "")
    if systemd:
        return Path(systemd.split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "helpline"


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir) if args.state_dir else default_state_dir()


def _config_path(args: argparse.Namespace) -> Path | None:
    return Path(args.config) if args.config else None


def _report_config_error(err: ConfigError) -> int:
    where = f"{err.source}: " if err.source else ""
    count = len(err.problems)
    print(
        f"{where}{count} problem{'s' if count != 1 else ''} in the configuration:", file=sys.stderr
    )
    for problem in err.problems:
        print(f"  {problem}", file=sys.stderr)
    return EX_CONFIG


def cmd_run(args: argparse.Namespace) -> int:
    from gateway import heap, logs
    from gateway.daemon import Daemon
    from gateway.socket_activation import SocketActivationError
    from gateway.state_lock import StateDirBusy

    try:
        config = load_config(_config_path(args))
    except ConfigError as err:
        return _report_config_error(err)
    logs.configure(args.log_format or config.core.logging.format, config.core.logging.level)
    daemon = Daemon(config, _state_dir(args), config_path=_config_path(args))
    heap.settle()
    try:
        return asyncio.run(daemon.run())
    except (SchemaTooNew, SocketActivationError) as err:
        print(f"helpline: {err}", file=sys.stderr)
        return EX_CONFIG
    except StateDirBusy as err:
        print(f"helpline: cannot start: {err}", file=sys.stderr)
        return EX_FAILURE
    except (StoreError, OSError) as err:
        print(f"helpline: cannot start: {err}", file=sys.stderr)
        return EX_FAILURE


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        load_config(Path(args.config))
    except ConfigError as err:
        return _report_config_error(err)
    print("ok")
    return EX_OK


def _load_quiet(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args))


def _token(args: argparse.Namespace, config: Config) -> str | None:
    if getattr(args, "token", None):
        return str(args.token)
    if os.environ.get("HELPLINE_TOKEN"):
        return os.environ["HELPLINE_TOKEN"]
    if config.core.http.tokens:
        return token_value(next(iter(config.core.http.tokens.values())))
    path = token_path(_state_dir(args))
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return None


def cmd_token(args: argparse.Namespace) -> int:
    try:
        config = _load_quiet(args)
    except ConfigError as err:
        return _report_config_error(err)
    token = _token(args, config)
    if token is None:
        print(
            f"no token yet: {token_path(_state_dir(args))} is created at the first "
            "`helpline run` when the config names no [http.tokens]",
            file=sys.stderr,
        )
        return EX_FAILURE
    print(token)
    return EX_OK


class UsageError(Exception):
    """The command line (or the config it reads) cannot work as given."""


def _base_url(args: argparse.Namespace, config: Config) -> tuple[str, str | None]:
    """The daemon's URL and, for a unix listener, its socket path."""
    if args.url:
        return str(args.url).rstrip("/"), None
    if os.environ.get("HELPLINE_URL"):
        return os.environ["HELPLINE_URL"].rstrip("/"), None
    listen = config.core.http.listen
    if listen.is_systemd:
        if config.core.http.public_url:
            return config.core.http.public_url.rstrip("/"), None
        raise UsageError(
            f"[http] listen = {listen} is a socket systemd passes: the command cannot tell "
            "where it listens; give --url (or $HELPLINE_URL, or [http] public_url)"
        )
    if listen.is_unix:
        return "http://localhost", listen.path
    host = "127.0.0.1" if listen.host in ("0.0.0.0", "") else listen.host  # noqa: S104
    host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
    return f"http://{host}:{listen.port}", None


def _client(
    args: argparse.Namespace, config: Config
) -> tuple[aiohttp.ClientSession, str, dict[str, str]]:
    """A session to the running daemon, its base URL, and the token header."""
    base, socket_path = _base_url(args, config)
    token = _token(args, config)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.UnixConnector(path=socket_path) if socket_path else None
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    return aiohttp.ClientSession(connector=connector, timeout=timeout), base, headers


async def _stream(args: argparse.Namespace, config: Config) -> int:
    session, base, headers = _client(args, config)
    async with session:
        after = args.after
        if not args.follow:
            while True:
                url = f"{base}/v1/stream?after={after}&limit=1000"
                async with session.get(url, headers=headers) as resp:
                    if resp.status != 200:
                        print(f"helpline: {resp.status}: {await resp.text()}", file=sys.stderr)
                        return EX_FAILURE
                    page = orjson.loads(await resp.read())
                for event in page["events"]:
                    sys.stdout.write(orjson.dumps(event).decode() + "\n")
                sys.stdout.flush()
                if not page["events"]:
                    return EX_OK
                after = page["next_after"]
        sse_headers = {**headers, "Accept": "text/event-stream"}
        async with session.get(f"{base}/v1/stream?after={after}", headers=sse_headers) as resp:
            if resp.status != 200:
                print(f"helpline: {resp.status}: {await resp.text()}", file=sys.stderr)
                return EX_FAILURE
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("data: "):
                    sys.stdout.write(line[6:] + "\n")
                    sys.stdout.flush()
    print("helpline: the daemon closed the stream", file=sys.stderr)
    return EX_OK


def _against_daemon(
    args: argparse.Namespace,
    work: Callable[[argparse.Namespace, Config], Coroutine[Any, Any, int]],
) -> int:
    """Run a command that talks to the running daemon over its HTTP API."""
    try:
        config = _load_quiet(args)
    except ConfigError as err:
        return _report_config_error(err)
    try:
        return asyncio.run(work(args, config))
    except UsageError as err:
        print(f"helpline: {err}", file=sys.stderr)
        return EX_USAGE
    except aiohttp.ClientError as err:
        print(f"helpline: cannot reach the daemon: {err}", file=sys.stderr)
        return EX_FAILURE
    except KeyboardInterrupt:
        return EX_OK


def cmd_stream(args: argparse.Namespace) -> int:
    return _against_daemon(args, _stream)


async def _contacts(args: argparse.Namespace, config: Config) -> int:
    session, base, headers = _client(args, config)
    reason = {"reason": args.reason} if getattr(args, "reason", None) else {}
    ref = quote(str(args.target), safe="")
    calls = {
        "find": ("GET", f"/v1/contacts?handle={ref}", None),
        "show": ("GET", f"/v1/contacts/{ref}", None),
        "split": ("POST", f"/v1/contacts/{ref}/split", reason),
        "erase": ("POST", f"/v1/contacts/{ref}/erase", reason),
    }
    method, path, body = calls[args.action]
    async with session, session.request(method, base + path, json=body, headers=headers) as resp:
        answer = await resp.read()
    if resp.status >= 400:
        problem = orjson.loads(answer) if answer.startswith(b"{") else {"detail": answer.decode()}
        print(f"helpline: {resp.status}: {problem.get('detail')}", file=sys.stderr)
        return EX_FAILURE
    print(orjson.dumps(orjson.loads(answer), option=orjson.OPT_INDENT_2).decode())
    return EX_OK


def cmd_contacts(args: argparse.Namespace) -> int:
    if args.action == "erase" and not args.yes:
        print("helpline: erasing cannot be undone; add --yes to erase", file=sys.stderr)
        return EX_USAGE
    return _against_daemon(args, _contacts)


async def _report(args: argparse.Namespace, config: Config) -> int:
    session, base, headers = _client(args, config)
    params = {"since": args.since}
    if args.channel:
        params["channel"] = args.channel
    if args.business_hours:
        params["business_hours"] = "true"
    url = f"{base}/v1/reports/first-response"
    async with session, session.get(url, params=params, headers=headers) as resp:
        answer = await resp.read()
    if resp.status >= 400:
        problem = orjson.loads(answer) if answer.startswith(b"{") else {"detail": answer.decode()}
        print(f"helpline: {resp.status}: {problem.get('detail')}", file=sys.stderr)
        return EX_USAGE if resp.status == 400 else EX_FAILURE
    report = orjson.loads(answer)
    if args.format == "json":
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    elif args.format == "csv":
        sys.stdout.write(report_csv(report))
    else:
        sys.stdout.write(report_table(report))
    return EX_OK


# The report's columns for a spreadsheet: the JSON field names, dotted where nested.
def cmd_report(args: argparse.Namespace) -> int:
    return _against_daemon(args, _report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="helpline", description="Omnichannel support gateway daemon."
    )
    parser.add_argument("--version", action="version", version=f"helpline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, config_required: bool = False) -> None:
        p.add_argument("--config", required=config_required, help="the TOML configuration file")
        p.add_argument("--state-dir", help="where the store and generated token live")

    run = sub.add_parser("run", help="run the daemon in the foreground")
    common(run)
    run.add_argument("--log-format", choices=["auto", "json", "console"])
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("--config", required=True)
    check.set_defaults(func=cmd_check_config)

    token = sub.add_parser("token", help="print the API token")
    common(token)
    token.set_defaults(func=cmd_token, token=None)

    stream = sub.add_parser("stream", help="print the stream as JSON lines")
    common(stream)
    stream.add_argument("--after", type=int, default=0, help="start after this offset")
    stream.add_argument("--follow", action="store_true", help="keep printing new events")
    stream.add_argument("--url", help="the daemon's base URL (default: from the config)")
    stream.add_argument("--token", help="API token (default: $HELPLINE_TOKEN or the state dir)")
    stream.set_defaults(func=cmd_stream)

    contacts = sub.add_parser("contacts", help="find, show, split or erase a contact")
    common(contacts)
    contacts.add_argument("action", choices=["find", "show", "split", "erase"])
    contacts.add_argument("target", help="a handle (for find) or a contact id")
    contacts.add_argument("--reason", help="recorded in the split or erased event")
    contacts.add_argument("--yes", action="store_true", help="confirm an erase")
    contacts.add_argument("--url", help="the daemon's base URL (default: from the config)")
    contacts.add_argument("--token", help="API token (default: $HELPLINE_TOKEN or the state dir)")
    contacts.set_defaults(func=cmd_contacts)

    report = sub.add_parser("report", help="print a report from the running daemon")
    reports = report.add_subparsers(dest="report", required=True)
    first = reports.add_parser(
        "first-response", help="first-response latency per channel (docs/first-response.md)"
    )
    common(first)
    first.add_argument(
        "--since",
        default="7d",
        help="a duration back from now (7d, 24h, 30m) or an RFC 3339 time (default: 7d)",
    )
    first.add_argument("--channel", choices=CHANNELS, help="only this channel")
    first.add_argument(
        "--business-hours",
        action="store_true",
        help="latencies in business hours where a channel counts them",
    )
    first.add_argument("--format", choices=["table", "json", "csv"], default="table")
    first.add_argument("--url", help="the daemon's base URL (default: from the config)")
    first.add_argument("--token", help="API token (default: $HELPLINE_TOKEN or the state dir)")
    first.set_defaults(func=cmd_report)
    cli_backends.add_parsers(sub, common, _against_daemon, _client, human_seconds)
    cli_ops.add_parsers(sub, common, _config_path, _state_dir, _report_config_error)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
