"""`helpline backup FILE` and `helpline restore FILE`: the store, copied out and put back.

Unlike the commands that read live state, these work on the store file itself
(gateway/store/backup.py), so backup works whether the daemon runs or not, and
restore refuses while it does.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.config import ConfigError, load_config
from gateway.store import SchemaTooNew, StoreError, sqlite_path
from gateway.store.backup import (
    BackupError,
    StoreFacts,
    TargetExists,
    backup_store,
    restore_store,
)
from gateway.store.migrate import latest_version

EX_OK = 0  # the statuses of gateway.cli
EX_FAILURE = 1
EX_USAGE = 2

PathOf = Callable[[argparse.Namespace], Path | None]


def add_parsers(
    sub: Any,
    common: Callable[[argparse.ArgumentParser], None],
    config_path: PathOf,
    state_dir: Callable[[argparse.Namespace], Path],
    config_error: Callable[[ConfigError], int],
) -> None:
    def store_of(args: argparse.Namespace) -> Path | int:
        """The store file the config and state directory name, or the config's exit status."""
        try:
            config = load_config(config_path(args))
        except ConfigError as err:
            return config_error(err)
        return sqlite_path(config.core.store.url, state_dir(args))

    backup = sub.add_parser(
        "backup", help="copy the store to FILE, consistently, while the daemon runs"
    )
    common(backup)
    backup.add_argument(
        "file", type=Path, metavar="FILE", help="the copy to write (one self-contained file)"
    )
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    backup.set_defaults(func=lambda args: cmd_backup(args, store_of(args)))

    restore = sub.add_parser(
        "restore", help="replace the store with a backup (the daemon must be stopped)"
    )
    common(restore)
    restore.add_argument(
        "file", type=Path, metavar="FILE", help="a file written by `helpline backup`"
    )
    restore.add_argument(
        "--force", action="store_true", help="replace a store that holds events (kept aside)"
    )
    restore.set_defaults(func=lambda args: cmd_restore(args, store_of(args)))


def describe(facts: StoreFacts) -> str:
    return (
        f"schema version {facts.schema_version}, stream head offset {facts.head_offset}, "
        f"{facts.size / 1e6:.1f} MB ({facts.size} bytes)"
    )


def _failed(command: str, err: StoreError) -> int:
    sys.stderr.write(f"helpline {command}: {err}\n")
    return EX_USAGE if isinstance(err, TargetExists) else EX_FAILURE


def cmd_backup(args: argparse.Namespace, store: Path | int) -> int:
    if isinstance(store, int):
        return store
    started = time.monotonic()
    try:
        facts = backup_store(store, args.file, force=args.force)
    except BackupError as err:
        return _failed("backup", err)
    took = time.monotonic() - started
    sys.stdout.write(f"backed up {store} to {args.file} in {took:.1f}s: {describe(facts)}\n")
    return EX_OK


def cmd_restore(args: argparse.Namespace, store: Path | int) -> int:
    if isinstance(store, int):
        return store
    try:
        restored = restore_store(args.file, store, force=args.force)
    except (BackupError, SchemaTooNew) as err:
        return _failed("restore", err)
    facts = restored.facts
    sys.stdout.write(f"restored {args.file} into {store}: {describe(facts)}\n")
    if facts.schema_version < latest_version():
        sys.stdout.write(f"the next start migrates it to schema version {latest_version()}\n")
    if restored.kept is not None:
        sys.stdout.write(f"the store it replaced is kept as {restored.kept}\n")
    return EX_OK
