from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.schema_cache import SchemaCache
from tracker.core.errors import MigrationError
from tracker.settings import Settings
from tracker.storage import migrate
from tracker.storage.clickhouse import ClickHouse

EXPECTED_TABLES = {
    "brands",
    "api_keys",
    "campaigns",
    "influencers",
    "links",
    "stores",
    "fees",
    "fx_rates",
    "clicks",
    "conversions",
    "clicks_daily",
    "schema_migrations",
}


@pytest.fixture
def ch(migrated_ch: ClickHouse) -> ClickHouse:
    """This module tests the migrations themselves: its databases are migrated, not built from the cached schema."""
    return migrated_ch


def _tables(ch: ClickHouse) -> set[str]:
    rows = ch.query("SELECT name FROM system.tables WHERE database = {db:String}", {"db": ch.database})
    return {r[0] for r in rows}


def _objects(ch: ClickHouse) -> dict[str, tuple[str, str]]:
    """Every table and view: its engine and its SHOW CREATE with the database name taken out."""
    names = [r[0] for r in ch.query("SELECT name FROM system.tables WHERE database = {db:String}", {"db": ch.database})]
    out = {}
    for name in names:
        [(engine, engine_full)] = ch.query(
            "SELECT engine, engine_full FROM system.tables WHERE database = {db:String} AND name = {n:String}",
            {"db": ch.database, "n": name},
        )
        [(create,)] = ch.query(f"SHOW CREATE TABLE `{ch.database}`.`{name}`")
        out[name] = (engine_full or engine, create.replace(f"{ch.database}.", "DB."))
    return out


def test_the_cached_schema_is_the_migrated_one(migrated_ch: ClickHouse, ch_from_cache: ClickHouse) -> None:
    """What every other test runs on (tests/schema_cache.py) equals what the migrations build."""
    assert migrated_ch.database != ch_from_cache.database
    migrated, cached = _objects(migrated_ch), _objects(ch_from_cache)
    assert sorted(cached) == sorted(migrated)
    for name in migrated:
        assert cached[name] == migrated[name], name
    assert "PROJECTION daily" in cached["clicks"][1]
    ledger = "SELECT version, name, checksum FROM schema_migrations FINAL ORDER BY version"
    assert ch_from_cache.query(ledger) == migrated_ch.query(ledger)
    assert migrate.missing(ch_from_cache) == []
    assert migrate.migrate(ch_from_cache) == []


@pytest.fixture
def ch_from_cache(settings: Settings, schema: SchemaCache) -> Iterator[ClickHouse]:
    client = ClickHouse.connect(settings.with_(clickhouse_database=settings.clickhouse_database + "_cached"))
    schema.create(client)
    try:
        yield client
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{client.database}`")


def test_fresh_database_gets_every_table(ch: ClickHouse) -> None:
    assert _tables(ch) >= EXPECTED_TABLES
    recorded = migrate.applied(ch)
    assert sorted(recorded) == [m.version for m in migrate.discover()]
    assert migrate.missing(ch) == []


def test_click_rollups_are_projections_inside_the_raw_parts(ch: ClickHouse) -> None:
    """Migration 0023: a batch and its rollups are one part, so they land or vanish together."""
    projections = ch.query(
        "SELECT name FROM system.projections WHERE database = {db:String} AND table = 'clicks' ORDER BY name",
        {"db": ch.database},
    )
    assert [p[0] for p in projections] == ["daily"]
    engines = dict(
        ch.query(
            "SELECT name, engine FROM system.tables WHERE database = {db:String} AND name LIKE 'clicks%'",
            {"db": ch.database},
        )
    )
    assert engines == {"clicks": "ReplacingMergeTree", "clicks_daily": "View"}


def test_rerun_is_a_noop(ch: ClickHouse) -> None:
    before = ch.query("SELECT count() FROM schema_migrations")[0][0]
    assert migrate.migrate(ch) == []
    assert migrate.migrate(ch) == []
    assert ch.query("SELECT count() FROM schema_migrations")[0][0] == before


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir()
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


def test_failing_migration_names_the_file_and_stops(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ch = ClickHouse.connect(settings)
    d = _write(
        tmp_path / "m",
        {
            "0001_ok.sql": "CREATE TABLE a (x UInt8) ENGINE = MergeTree ORDER BY x",
            "0002_broken.sql": "CREATE TABLE b (x UInt8) ENGINE = NoSuchEngine",
            "0003_after.sql": "CREATE TABLE c (x UInt8) ENGINE = MergeTree ORDER BY x",
        },
    )
    try:
        with pytest.raises(MigrationError) as info:
            migrate.migrate(ch, d)
        assert "0002_broken.sql" in info.value.message
        assert "NoSuchEngine" in info.value.message
        assert sorted(migrate.applied(ch)) == [1]
        assert "c" not in _tables(ch)
        # Fixing the file lets the next run continue where it stopped.
        (d / "0002_broken.sql").write_text("CREATE TABLE b (x UInt8) ENGINE = MergeTree ORDER BY x")
        assert migrate.migrate(ch, d) == ["0002_broken.sql", "0003_after.sql"]
    finally:
        ch.command(f"DROP DATABASE IF EXISTS `{ch.database}`")


def test_multi_statement_file_and_comments(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ch = ClickHouse.connect(settings)
    d = _write(
        tmp_path / "m",
        {
            "0001_two.sql": "-- two tables\nCREATE TABLE a (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
            "CREATE TABLE b (x UInt8) ENGINE = MergeTree ORDER BY x;\n",
        },
    )
    try:
        assert migrate.migrate(ch, d) == ["0001_two.sql"]
        assert {"a", "b"} <= _tables(ch)
    finally:
        ch.command(f"DROP DATABASE IF EXISTS `{ch.database}`")


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"1_short.sql": "SELECT 1"}, "NNNN_name.sql"),
        ({"0001_a.sql": "SELECT 1", "0001_b.sql": "SELECT 1"}, "share the number"),
        ({"0001_Upper.sql": "SELECT 1"}, "NNNN_name.sql"),
    ],
)
def test_badly_named_files_are_refused(tmp_path: Path, files: dict[str, str], needle: str) -> None:
    d = _write(tmp_path / "m", files)
    with pytest.raises(MigrationError) as info:
        migrate.discover(d)
    assert needle in info.value.message


def _migrate_cli(url: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracker.cli", "migrate"],
        env={"PATH": "/usr/bin:/bin", "CLICKHOUSE_URL": url, "REDIS_URL": "redis://127.0.0.1:1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_command_fresh_rerun_and_failure(tmp_path: Path) -> None:
    url = f"chdb://{tmp_path / 'ch'}"
    first = _migrate_cli(url)
    assert first.returncode == 0, first.stderr
    assert "0001_brands.sql" in first.stdout
    second = _migrate_cli(url)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout
    bad = _write(tmp_path / "bad", {"0001_bad.sql": "CREATE TABLE nope (x UInt8) ENGINE = Nope"})
    failed = _migrate_cli(f"chdb://{tmp_path / 'ch2'}", {"TRACKER_MIGRATIONS_DIR": str(bad)})
    assert failed.returncode == 4
    assert failed.stderr.startswith("tracker: Migration 0001_bad.sql failed")
    assert len(failed.stderr.strip().splitlines()) == 1


def test_the_schema_cache_points_views_at_the_new_database(settings: Settings) -> None:
    """A materialized view replayed from the cache writes to its own database's target, and objects
    come out after the ones they read (a view over a view over a table named to sort first)."""
    source = ClickHouse.connect(settings.with_(clickhouse_database=settings.clickhouse_database + "_src"))
    target = ClickHouse.connect(settings.with_(clickhouse_database=settings.clickhouse_database + "_dst"))
    try:
        migrate.applied(source)  # the ledger table
        for statement in (
            "CREATE TABLE z_events (n UInt32) ENGINE = MergeTree ORDER BY n",
            "CREATE TABLE totals (n UInt64) ENGINE = SummingMergeTree ORDER BY tuple()",
            "CREATE MATERIALIZED VIEW m_totals TO totals AS SELECT toUInt64(sum(n)) AS n FROM z_events",
            "CREATE VIEW b_total AS SELECT sum(n) AS n FROM totals",
            "CREATE VIEW a_total AS SELECT n FROM b_total",
        ):
            source.command(statement)
        cache = SchemaCache.capture(source)
        assert all(settings.clickhouse_database + "_src" not in s for s in cache.statements)
        cache.create(target)
        target.command("INSERT INTO z_events VALUES (1), (2), (3)")
        assert target.query("SELECT n FROM a_total") == [(6,)]
        assert source.query("SELECT count() FROM totals") == [(0,)]
    finally:
        for client in (source, target):
            client.command(f"DROP DATABASE IF EXISTS `{client.database}`")
