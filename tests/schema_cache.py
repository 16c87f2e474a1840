"""The migrated schema, captured once and replayed into a fresh database per test (Snuba's DDL cache).

Running every migration costs a test 0.3-1.5 s (sixteen files, a projection
materialized with ``mutations_sync``, a ledger row each); replaying the final
``CREATE`` statements costs a fraction of that. The capture reads
``system.tables.create_table_query`` of a database the real migrations built,
so engines, projections, TTLs, settings and views come out exactly as migrated
(``tests/storage/test_migrate.py`` compares the two); the ``schema_migrations``
rows are copied too, so code that checks for pending migrations sees none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tracker.storage.clickhouse import ClickHouse

# Stands for the database name in the cached statements; not an identifier ClickHouse would accept.
_DB = "\x00db\x00"
_LEDGER_COLUMNS = ["version", "name", "checksum", "applied_at"]


@dataclass(frozen=True)
class SchemaCache:
    statements: tuple[str, ...]
    ledger: tuple[tuple[Any, ...], ...]

    @classmethod
    def capture(cls, ch: ClickHouse) -> SchemaCache:
        """The DDL of every table and view of ``ch.database``, in an order that creates each
        object after the ones it reads from or writes to."""
        rows = ch.query(
            "SELECT name, create_table_query FROM system.tables "
            "WHERE database = {db:String} AND NOT is_temporary AND NOT startsWith(name, '.inner') ORDER BY name",
            {"db": ch.database},
        )
        # The template database's name is unique to the session, so a qualified name is
        # never anything but a reference to one of its objects.
        qualified = re.compile(rf"(?:`{re.escape(ch.database)}`|\b{re.escape(ch.database)})\.")
        ddl = {name: qualified.sub(_DB + ".", query) for name, query in rows}
        mentions = re.compile(re.escape(_DB) + r"\.`?(\w+)`?")
        needs = {
            name: {other for other in mentions.findall(query) if other != name and other in ddl}
            for name, query in ddl.items()
        }
        ordered: list[str] = []
        while len(ordered) < len(ddl):
            ready = [name for name in ddl if name not in ordered and needs[name] <= set(ordered)]
            if not ready:
                raise RuntimeError(f"Circular references between {sorted(set(ddl) - set(ordered))}.")
            ordered += ready
        ledger = ch.query(f"SELECT {', '.join(_LEDGER_COLUMNS)} FROM schema_migrations FINAL ORDER BY version")
        return cls(tuple(ddl[name] for name in ordered), tuple(ledger))

    def create(self, ch: ClickHouse, database: str | None = None) -> None:
        """Create the schema in ``database`` (default ``ch.database``), which must exist and be empty."""
        target = f"`{database or ch.database}`"
        for statement in self.statements:
            ch.command(statement.replace(_DB, target))
        ch.insert(f"{target}.schema_migrations", [list(row) for row in self.ledger], _LEDGER_COLUMNS)
