"""The oldest ClickHouse server the schema runs on (tracker/storage/version.py)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tracker import cli
from tracker.core.errors import MigrationError
from tracker.settings import Settings
from tracker.storage import version
from tracker.storage.clickhouse import ClickHouse

NEEDS = (
    "projections on a ReplacingMergeTree need the table setting deduplicate_merge_projection_mode, added in 24.8"
)


def refusal(given: str) -> str:
    return f"ClickHouse server {given} is older than the minimum 24.8 this schema needs ({NEEDS})."


@pytest.mark.parametrize("given", ["24.8.14.39", "24.10.1.2812", "25.8.4.13", "26.9.2.1", "100.0"])
def test_servers_from_the_minimum_on_are_accepted(given: str) -> None:
    version.check(given)


@pytest.mark.parametrize("given", ["24.3.1.2672", "24.7.6.8", "23.12.6.19", "21.8.15.7"])
def test_an_older_server_is_refused_in_one_line(given: str) -> None:
    with pytest.raises(MigrationError) as info:
        version.check(given)
    assert info.value.message == refusal(given)


def test_an_unreadable_version_is_refused() -> None:
    with pytest.raises(MigrationError) as info:
        version.check("unknown")
    assert info.value.message == "ClickHouse server version 'unknown' cannot be read; this schema needs 24.8 or newer."


def test_the_engine_the_tests_run_is_supported(chdb_dir: Path) -> None:
    ch = ClickHouse.connect(Settings(clickhouse_url=f"chdb://{chdb_dir}", clickhouse_database="default"))
    assert version.require(ch).split(".")[0].isdigit()


def test_migrate_refuses_an_older_server_before_touching_the_schema(
    chdb_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database = "t_" + uuid.uuid4().hex[:12]
    monkeypatch.setenv("CLICKHOUSE_URL", f"chdb://{chdb_dir}")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("TRACKER_CLICKHOUSE_DATABASE", database)
    real_query = ClickHouse.query

    def old_server(self: ClickHouse, sql: str, *args: Any, **kw: Any) -> list[tuple[Any, ...]]:
        return [("24.3.1.2672",)] if sql == "SELECT version()" else real_query(self, sql, *args, **kw)

    monkeypatch.setattr(ClickHouse, "query", old_server)
    assert cli.main(["migrate"]) == cli.EXIT_MIGRATION
    err = capsys.readouterr().err
    assert err == f"tracker: {refusal('24.3.1.2672')}\n"
    monkeypatch.setattr(ClickHouse, "query", real_query)
    ch = ClickHouse.connect(Settings(clickhouse_url=f"chdb://{chdb_dir}", clickhouse_database=database))
    try:
        assert ch.query("SELECT count() FROM system.tables WHERE database = {db:String}", {"db": database}) == [(0,)]
    finally:
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")
