"""Numbered schema steps, applied in order at start; a newer schema is refused.

Each step is one SQL file `NNNN_name.sql` run in one transaction together with
the new `user_version`, so a crash mid-migration leaves the previous version.
"""

from __future__ import annotations

import sqlite3
from importlib import resources

import structlog

from gateway.store import SchemaTooNew

log = structlog.get_logger("gateway.store")


def sqlite_steps() -> list[tuple[int, str, str]]:
    folder = resources.files("gateway.store") / "migrations" / "sqlite"
    steps = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            steps.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(steps)


def latest_version() -> int:
    steps = sqlite_steps()
    return steps[-1][0] if steps else 0


def migrate_sqlite(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; returns the version now in force."""
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    steps = sqlite_steps()
    newest = steps[-1][0] if steps else 0
    if current > newest:
        raise SchemaTooNew(
            f"the database has schema version {current}, newer than this helpline "
            f"knows ({newest}): run the helpline version that migrated it, or restore a backup"
        )
    for version, name, sql in steps:
        if version <= current:
            continue
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;"
            )
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.info("store.migrated", step=name, version=version)
        current = version
    return current
