"""Numbered SQL migrations, applied in order and recorded in ``schema_migrations``.

Files are ``NNNN_name.sql`` in ``migrations/`` (override with
``TRACKER_MIGRATIONS_DIR``). A file holds one statement (one table or view per
file); statements separated by a line that ends with ``;`` are also accepted.
Re-running is a no-op; a failing file stops the run with its name and the
ClickHouse error, and files after it are not applied.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tracker.core.errors import MigrationError, QueryError
from tracker.storage import cluster
from tracker.storage.clickhouse import ClickHouse

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version     UInt32,
    name        String,
    checksum    String,
    applied_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def statements(self) -> list[str]:
        parts = re.split(r";[ \t]*\n", self.sql + "\n")
        out = []
        for part in parts:
            body = "\n".join(line for line in part.splitlines() if not line.strip().startswith("--")).strip()
            if body:
                out.append(body.rstrip(";"))
        return out


def migrations_dir() -> Path:
    env = os.environ.get("TRACKER_MIGRATIONS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "migrations"


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    if not directory.is_dir():
        raise MigrationError(f"Migrations directory {directory} does not exist.")
    found: list[Migration] = []
    seen: dict[int, str] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".sql":
            continue
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"Migration file {path.name} is not named NNNN_name.sql.")
        version = int(m.group(1))
        if version in seen:
            raise MigrationError(f"Migrations {seen[version]} and {path.name} share the number {version:04d}.")
        seen[version] = path.name
        found.append(Migration(version, path.name, path))
    return found


def applied(ch: ClickHouse) -> dict[int, str]:
    cluster.prepare_ledger(ch, _LEDGER)
    rows = ch.query("SELECT version, name FROM schema_migrations FINAL ORDER BY version")
    return {int(v): str(n) for v, n in rows}


def migrate(ch: ClickHouse, directory: Path | None = None, *, retention_months: int | None = None) -> list[str]:
    """Apply pending migrations in order; return the names applied now.

    ``retention_months`` (``settings.click_retention_months``) then sets the TTL of
    the raw clicks (their rollups are projections of it) and of the report cache.
    """
    done = applied(ch)
    names: list[str] = []
    # On a cluster every pending statement is rendered before the first one runs (storage/cluster.py).
    pending = [
        (m, [sql for s in m.statements() for sql in cluster.statements(ch, s, f"Migration {m.name}")])
        for m in discover(directory)
        if m.version not in done
    ]
    for migration, statements in pending:
        for statement in statements:
            try:
                ch.command(statement)
            except QueryError as exc:
                raise MigrationError(f"Migration {migration.name} failed: {exc.message}") from exc
        ch.insert(
            "schema_migrations",
            [[migration.version, migration.name, migration.checksum, datetime.now(UTC)]],
            ["version", "name", "checksum", "applied_at"],
        )
        names.append(migration.name)
    if retention_months is not None:
        apply_retention(ch, retention_months)
    return names


# Tables whose rows expire after the click retention, and their time expression.
# Conversions are never expired. The daily click rollup is a projection
# inside ``clicks`` (migration 0023) and expires with its rows; the uniques cache
# expires with them, so reports never mix a day a rollup has with one raw clicks lost.
_RETENTION = {
    "clicks": "toDateTime(ts)",
    "report_daily_uniques": "day",
}
_TTL_MONTHS = re.compile(r"\bTTL .*?toIntervalMonth\((\d+)\)")


def retention(ch: ClickHouse) -> dict[str, int | None]:
    """Current TTL in months of each table that has one (None when it has no TTL)."""
    stored = {cluster.table(ch, name): name for name in _RETENTION}
    rows = ch.query(
        "SELECT name, engine_full FROM system.tables WHERE database = {db:String} AND name IN {names:Array(String)}",
        {"db": ch.database, "names": list(stored)},
    )
    out: dict[str, int | None] = {}
    for name, engine in rows:
        m = _TTL_MONTHS.search(engine)
        out[stored[name]] = int(m.group(1)) if m else None
    return out


def apply_retention(ch: ClickHouse, months: int) -> list[str]:
    """Set the clicks TTL to ``months`` where it differs; returns the tables changed."""
    # DDL cannot bind the interval; the value is an integer from the settings, never a request.
    months = int(months)
    if not 1 <= months <= 1200:
        raise MigrationError(f"Click retention of {months} months is out of range: use 1 to 1200.")
    changed = []
    for table, current in retention(ch).items():
        if current == months:
            continue
        try:
            alter = f"ALTER TABLE {table} MODIFY TTL {_RETENTION[table]} + INTERVAL {months} MONTH"
            for sql in cluster.statements(ch, alter, "The click retention"):
                ch.command(sql)
        except QueryError as exc:
            raise MigrationError(f"Setting the {table} retention to {months} months failed: {exc.message}") from exc
        changed.append(table)
    return changed


def missing(ch: ClickHouse, directory: Path | None = None) -> list[str]:
    """Names of migrations not applied yet (readiness and `serve` in production use it)."""
    done = applied(ch)
    return [m.name for m in discover(directory) if m.version not in done]
