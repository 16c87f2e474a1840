"""The database pool the `ch` fixture draws from: a reused database is as good as a new one."""

from __future__ import annotations

from tests.schema_cache import DatabasePool, SchemaCache
from tracker.settings import Settings
from tracker.storage import migrate
from tracker.storage.clickhouse import ClickHouse


def _tables(ch: ClickHouse, database: str) -> list[str]:
    rows = ch.query("SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name", {"db": database})
    return [name for (name,) in rows]


def test_a_reused_database_is_empty_with_its_ledger_merges_and_dedup_log_reset(
    template: ClickHouse, schema: SchemaCache, settings: Settings
) -> None:
    pool = DatabasePool(template, schema)
    try:
        first = pool.name()
        pool.prepare(first)
        db = f"`{first}`"
        template.command(f"SYSTEM STOP MERGES {db}.brands")
        for _ in range(2):
            template.command(
                f"INSERT INTO {db}.schema_migrations SETTINGS insert_deduplication_token = 'x' "
                "SELECT 9999, 'test', '', now()"
            )
        pool.release(first)

        again = pool.name()
        assert again == first
        pool.prepare(again)
        assert (
            migrate.missing(ClickHouse.connect(settings.with_(clickhouse_database=again), create_database=False)) == []
        )
        (rows,) = template.query(f"SELECT count() FROM {db}.schema_migrations WHERE version = 9999")[0]
        assert rows == 0
        assert template.query(f"SELECT count() FROM {db}.schema_migrations")[0][0] == len(schema.ledger)
        # Merges run again: OPTIMIZE ... FINAL folds two parts into one.
        for _ in range(2):
            template.command(f"INSERT INTO {db}.brands (id) VALUES ('b')")
        template.command(f"OPTIMIZE TABLE {db}.brands FINAL")
        parts = "SELECT count() FROM system.parts WHERE database = {db:String} AND table = 'brands' AND active"
        assert template.query(parts, {"db": again})[0][0] == 1
        # The insert-deduplication log went with the rows.
        template.command(
            f"INSERT INTO {db}.schema_migrations SETTINGS insert_deduplication_token = 'x' "
            "SELECT 9999, 'test', '', now()"
        )
        assert template.query(f"SELECT count() FROM {db}.schema_migrations WHERE version = 9999")[0][0] == 1
        assert _tables(template, again) == _tables(template, template.database)
    finally:
        pool.close()


def test_a_database_whose_tables_changed_is_dropped_not_reused(template: ClickHouse, schema: SchemaCache) -> None:
    pool = DatabasePool(template, schema)
    try:
        changed, extra = pool.name(), pool.name()
        pool.prepare(changed)
        pool.prepare(extra)
        template.command(f"ALTER TABLE `{changed}`.clicks ADD COLUMN gclid String DEFAULT ''")
        template.command(f"CREATE TABLE `{extra}`.t (n UInt8) ENGINE = MergeTree ORDER BY n")
        pool.release(changed)
        pool.release(extra)
        assert changed not in _databases(template) and extra not in _databases(template)
        assert pool.name() not in (changed, extra)
    finally:
        pool.close()


def _databases(ch: ClickHouse) -> set[str]:
    return {name for (name,) in ch.query("SELECT name FROM system.databases")}
