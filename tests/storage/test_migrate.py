from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tracker.core.errors import MigrationError
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


def _tables(ch: ClickHouse) -> set[str]:
    rows = ch.query("SELECT name FROM system.tables WHERE database = {db:String}", {"db": ch.database})
    return {r[0] for r in rows}


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
