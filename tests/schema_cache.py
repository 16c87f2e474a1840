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
import uuid
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
        self.write_ledger(ch, target)

    def write_ledger(self, ch: ClickHouse, target: str) -> None:
        """The ``schema_migrations`` rows into ``target`` (a quoted database name)."""
        ch.insert(f"{target}.schema_migrations", [list(row) for row in self.ledger], _LEDGER_COLUMNS)


# What a test could change in a database besides its rows: which tables exist (a table
# dropped and created again has a new uuid) and their columns. A database whose fingerprint
# moved is dropped rather than reused.
_FINGERPRINT = (
    "SELECT (SELECT groupBitXor(cityHash64(name, uuid, engine)) FROM system.tables WHERE database = {db:String}),"
    " (SELECT groupBitXor(cityHash64(table, name, type, default_kind, default_expression))"
    " FROM system.columns WHERE database = {db:String})"
)


class DatabasePool:
    """Databases of the cached schema, emptied and handed to the next test instead of dropped.

    Creating one costs a test ~100-170 ms of CPU (31 statements); ``TRUNCATE ALL TABLES`` and
    the ledger's rows again cost ~15 ms. Emptying happens when a database is handed out, so
    rows written after the previous test's checks are gone too. Truncating clears the tables'
    insert-deduplication logs as well, so a retried batch of the next test is not mistaken for
    one it already wrote. Merges a test stopped are started again.
    """

    def __init__(self, admin: ClickHouse, schema: SchemaCache) -> None:
        self._admin = admin
        self._schema = schema
        self._free: list[str] = []
        self._fingerprints: dict[str, tuple[Any, ...]] = {}
        self._merging = [
            name
            for (name,) in admin.query(
                "SELECT name FROM system.tables WHERE database = {db:String} AND engine LIKE '%MergeTree'",
                {"db": admin.database},
            )
        ]

    def name(self) -> str:
        """A database name for a test: a free one of the pool, else a new one."""
        return self._free.pop() if self._free else "t_" + uuid.uuid4().hex[:12]

    def prepare(self, database: str) -> None:
        """Make ``database`` (a name from :meth:`name`) an empty database of the schema."""
        target = f"`{database}`"
        if database in self._fingerprints:
            self._admin.command(f"TRUNCATE ALL TABLES FROM {target}")
            # Per table: a global START would also restart merges another fixture stopped on purpose.
            for table in self._merging:
                self._admin.command(f"SYSTEM START MERGES {target}.`{table}`")
            self._schema.write_ledger(self._admin, target)
            return
        self._admin.command(f"CREATE DATABASE {target}")
        self._schema.create(self._admin, database)
        self._fingerprints[database] = self._fingerprint(database)

    def release(self, database: str) -> None:
        """Take ``database`` back for another test, or drop it if its tables changed."""
        if self._fingerprints.get(database) == self._fingerprint(database):
            self._free.append(database)
            return
        self._fingerprints.pop(database, None)
        self._admin.command(f"DROP DATABASE IF EXISTS `{database}`")

    def close(self) -> None:
        for database in self._fingerprints:
            self._admin.command(f"DROP DATABASE IF EXISTS `{database}`")
        self._fingerprints.clear()
        self._free.clear()

    def _fingerprint(self, database: str) -> tuple[Any, ...]:
        return tuple(self._admin.query(_FINGERPRINT, {"db": database})[0])
