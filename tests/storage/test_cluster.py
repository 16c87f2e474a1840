"""The cluster schema (tracker/storage/cluster.py), checked in the real engine as far as chDB allows.

No ClickHouse cluster runs here. What runs: every rendered statement through the
engine's parser (``formatQuery``), the whole rendered schema in a chDB configured as a
node of a one-shard cluster (``tests/cluster_engine.py``), and ``migrate`` against a
recorder, for what it sends on one node (unchanged) and on a cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from tests.chdb_server import ChdbHttpServer
from tracker import cli
from tracker.core.errors import MigrationError
from tracker.reports.params import GROUP_KEYS
from tracker.settings import Settings
from tracker.storage import cluster, migrate
from tracker.storage.clickhouse import CLUSTER_SETTINGS, ClickHouse

CLUSTER = "tracker_cluster"
MIGRATIONS = migrate.discover()


def _render(sql: str, source: str = "Migration 0099_test.sql") -> list[str]:
    return cluster.render(sql, cluster=CLUSTER, database="tracker", source=source)


def _rendered(name: str) -> list[str]:
    m = next(m for m in MIGRATIONS if m.name == name)
    return [sql for s in m.statements() for sql in _render(s, f"Migration {m.name}")]


@pytest.fixture(scope="module")
def engine(chdb_dir: Path) -> Iterator[ClickHouse]:
    """The test process's chDB, for the parser only (no database, no Redis)."""
    ch = ClickHouse.connect(Settings(clickhouse_url=f"chdb://{chdb_dir}", clickhouse_database="default"))
    yield ch
    ch.close()


def _formatted(ch: ClickHouse, sql: str) -> str:
    return str(ch.query("SELECT formatQuerySingleLine({q:String})", {"q": sql})[0][0])


@pytest.mark.parametrize("migration", MIGRATIONS, ids=[m.name for m in MIGRATIONS])
def test_every_rendered_statement_parses_in_the_engine(engine: ClickHouse, migration: migrate.Migration) -> None:
    rendered = _rendered(migration.name)
    assert len(rendered) >= len(migration.statements())
    for sql in rendered:
        formatted = _formatted(engine, sql)  # raises QueryError on a syntax error
        if not sql.startswith("INSERT"):
            assert f"ON CLUSTER {CLUSTER}" in formatted


def test_the_ledger_parses_and_is_one_table_on_every_node(engine: ClickHouse) -> None:
    [ledger] = _render(migrate._LEDGER, "The migrations ledger")
    assert (
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/schema_migrations', "
        "'{shard}-{replica}') ORDER BY version" in _formatted(engine, ledger)
    )


def test_a_table_becomes_a_replicated_local_table_and_a_distributed_table(engine: ClickHouse) -> None:
    local, dist = (_formatted(engine, sql) for sql in _rendered("0010_conversions.sql"))
    assert local.startswith("CREATE TABLE IF NOT EXISTS conversions_local ON CLUSTER tracker_cluster (")
    assert (
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/conversions', '{replica}', "
        "version) PARTITION BY toYYYYMM(occurred_at) ORDER BY (brand_id, order_id)" in local
    )
    assert dist == (
        "CREATE TABLE IF NOT EXISTS conversions ON CLUSTER tracker_cluster AS conversions_local "
        "ENGINE = Distributed('tracker_cluster', 'tracker', 'conversions_local', cityHash64(brand_id))"
    )
    # An engine without arguments keeps none; brands are sharded by their own id.
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/clicks', '{replica}')" in (
        _rendered("0009_clicks.sql")[0]
    )
    assert _rendered("0001_brands.sql")[1].endswith("cityHash64(id))")


def test_materialized_views_read_and_write_the_local_tables(engine: ClickHouse) -> None:
    [view] = _rendered("0012_clicks_hourly_mv.sql")
    formatted = _formatted(engine, view)
    assert formatted.startswith(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS clicks_hourly_mv ON CLUSTER tracker_cluster TO clicks_hourly_local AS"
    )
    assert "FROM clicks_local GROUP BY" in formatted


def test_projection_alters_go_to_the_local_table_drops_to_both_and_views_read_the_distributed_one() -> None:
    rendered = _rendered("0023_clicks_projections.sql")
    assert [sql.splitlines()[0] for sql in rendered] == [
        "DROP VIEW IF EXISTS clicks_hourly_mv ON CLUSTER tracker_cluster SYNC",
        "DROP VIEW IF EXISTS clicks_daily_mv ON CLUSTER tracker_cluster SYNC",
        "ALTER TABLE clicks_local ON CLUSTER tracker_cluster MODIFY SETTING "
        "deduplicate_merge_projection_mode = 'rebuild'",
        "ALTER TABLE clicks_local ON CLUSTER tracker_cluster ADD PROJECTION IF NOT EXISTS daily",
        "ALTER TABLE clicks_local ON CLUSTER tracker_cluster MATERIALIZE PROJECTION daily SETTINGS mutations_sync = 1",
        "DROP TABLE IF EXISTS clicks_hourly ON CLUSTER tracker_cluster SYNC",
        "DROP TABLE IF EXISTS clicks_hourly_local ON CLUSTER tracker_cluster SYNC",
        "DROP TABLE IF EXISTS clicks_daily ON CLUSTER tracker_cluster SYNC",
        "DROP TABLE IF EXISTS clicks_daily_local ON CLUSTER tracker_cluster SYNC",
        "CREATE VIEW IF NOT EXISTS clicks_daily ON CLUSTER tracker_cluster AS",
    ]
    assert "FROM clicks\n" in rendered[-1]  # the view reads every shard through the Distributed table


def test_insert_select_runs_through_the_distributed_tables_unchanged() -> None:
    insert = _rendered("0022_clicks_daily_mv.sql")[-1]
    assert insert == next(m for m in MIGRATIONS if m.name == "0022_clicks_daily_mv.sql").statements()[-1]


def test_column_alters_change_both_tables_and_the_rest_only_the_local_one(engine: ClickHouse) -> None:
    # MODIFY TTL comes last: its expression list would take the next command as a second TTL.
    local, dist = _render("ALTER TABLE clicks ADD COLUMN gclid String AFTER utm_content, COMMENT COLUMN gclid "
                          "'Google click id', MODIFY TTL toDateTime(ts) + INTERVAL 6 MONTH")
    assert local.startswith("ALTER TABLE clicks_local ON CLUSTER tracker_cluster ADD COLUMN gclid String")
    assert "MODIFY TTL" in local
    assert dist == (
        "ALTER TABLE clicks ON CLUSTER tracker_cluster ADD COLUMN gclid String AFTER utm_content, "
        "COMMENT COLUMN gclid 'Google click id'"
    )
    for sql in (local, dist):
        _formatted(engine, sql)


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("CREATE TABLE t (brand_id String) ENGINE = Memory", "engine Memory has no Replicated form"),
        ("CREATE TABLE t (id String) ENGINE = MergeTree ORDER BY id", "has no brand_id column to shard by"),
        ("CREATE TABLE t (brand_id String, k String, v UInt64) ENGINE = ReplacingMergeTree(v) ORDER BY k",
         "ORDER BY lacks brand_id"),
        ("CREATE TABLE t (brand_id String) ENGINE = MergeTree ORDER BY brand_id SETTINGS x = (1", "do not balance"),
        ("CREATE TABLE t AS clicks", "needs its own column list"),
        ("CREATE TABLE t (brand_id String)", "names no ENGINE"),
        ("CREATE TABLE other.t (brand_id String) ENGINE = MergeTree ORDER BY brand_id", "plain name"),
        ("CREATE TABLE t ON CLUSTER c (brand_id String) ENGINE = MergeTree ORDER BY brand_id",
         "already names a cluster"),
        ("CREATE MATERIALIZED VIEW v ENGINE = MergeTree ORDER BY brand_id AS SELECT brand_id FROM clicks",
         "must write TO a table"),
        ("CREATE MATERIALIZED VIEW v TO t AS SELECT c.brand_id FROM clicks c JOIN links l ON c.link_id = l.id",
         "must read one table"),
        ("CREATE MATERIALIZED VIEW v TO t AS SELECT link_id, count() AS n FROM clicks GROUP BY link_id",
         "must select brand_id as it is"),
        ("CREATE MATERIALIZED VIEW v TO t AS SELECT brand_id FROM numbers(10)", "not a table function"),
        ("ALTER TABLE clicks DELETE WHERE brand_id = 'b'", "ALTER TABLE ... DELETE WHERE is not a command"),
        ("ALTER TABLE clicks MODIFY ORDER BY (brand_id, ts)", "ALTER TABLE ... MODIFY ORDER is not a command"),
        ("DROP TABLE clicks, conversions", "must name one table"),
        ("DROP DATABASE tracker", "DROP DATABASE statements have no cluster form"),
        ("RENAME TABLE a TO b", "RENAME TABLE statements have no cluster form"),
        ("TRUNCATE TABLE clicks", "TRUNCATE TABLE statements"),
        ("OPTIMIZE TABLE clicks FINAL", "OPTIMIZE TABLE statements"),
        ("INSERT INTO FUNCTION remote('h', db, t) SELECT 1", "not a table function"),
    ],
)
def test_statements_without_a_safe_cluster_form_are_refused(sql: str, reason: str) -> None:
    with pytest.raises(MigrationError) as info:
        _render(sql, "Migration 0099_bad.sql")
    message = info.value.message
    assert message.startswith("Migration 0099_bad.sql cannot be applied to cluster tracker_cluster: ")
    assert reason in message
    assert "\n" not in message


class Recorder:
    """Stands in for ClickHouse: records what ``migrate`` sends, answers the ledger queries."""

    def __init__(self, cluster_name: str | None, ledger_engine: str | None = None) -> None:
        self.cluster = cluster_name
        self.database = "tracker"
        self.ledger_engine = ledger_engine
        self.commands: list[str] = []
        self.inserted: list[str] = []

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if "system.tables" in sql and "schema_migrations" in sql:
            return [(self.ledger_engine,)] if self.ledger_engine else []
        if "engine_full" in sql:  # the retention check: every table it asks for has a 6-month TTL
            return [(name, "MergeTree TTL toDateTime(ts) + toIntervalMonth(6)") for name in (parameters or {})["names"]]
        return []

    def command(self, sql: str) -> None:
        self.commands.append(sql)

    def insert(self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str], **kw: Any) -> None:
        self.inserted.append(table)


def test_one_node_migrate_sends_every_statement_unchanged() -> None:
    rec = Recorder(None)
    applied = migrate.migrate(cast(ClickHouse, rec), retention_months=13)
    assert applied == [m.name for m in MIGRATIONS]
    assert rec.commands == [
        migrate._LEDGER,
        *(s for m in MIGRATIONS for s in m.statements()),
        "ALTER TABLE clicks MODIFY TTL toDateTime(ts) + INTERVAL 13 MONTH",
        "ALTER TABLE report_daily_uniques MODIFY TTL day + INTERVAL 13 MONTH",
    ]
    assert rec.inserted == ["schema_migrations"] * len(MIGRATIONS)


def test_cluster_migrate_creates_database_and_ledger_on_every_node_then_the_rendered_schema() -> None:
    rec = Recorder(CLUSTER)
    migrate.migrate(cast(ClickHouse, rec), retention_months=13)
    assert rec.commands[0] == "CREATE DATABASE IF NOT EXISTS `tracker` ON CLUSTER tracker_cluster"
    assert rec.commands[1:] == [
        *_render(migrate._LEDGER),
        *(sql for m in MIGRATIONS for s in m.statements() for sql in _render(s)),
        # The retention is read from the local tables and set there.
        "ALTER TABLE clicks_local ON CLUSTER tracker_cluster MODIFY TTL toDateTime(ts) + INTERVAL 13 MONTH",
        "ALTER TABLE report_daily_uniques_local ON CLUSTER tracker_cluster MODIFY TTL day + INTERVAL 13 MONTH",
    ]


def test_a_refused_file_is_named_and_nothing_of_the_run_is_applied(tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE a (brand_id String) ENGINE = MergeTree ORDER BY brand_id")
    (tmp_path / "0002_memory.sql").write_text("CREATE TABLE b (brand_id String) ENGINE = Memory")
    rec = Recorder(CLUSTER)
    with pytest.raises(MigrationError) as info:
        migrate.migrate(cast(ClickHouse, rec), tmp_path)
    assert info.value.message.startswith("Migration 0002_memory.sql cannot be applied to cluster tracker_cluster")
    assert not any(sql.startswith("CREATE TABLE a") for sql in rec.commands)
    assert rec.inserted == []


@pytest.mark.parametrize(
    ("cluster_name", "ledger_engine", "needle"),
    [
        (None, "ReplicatedReplacingMergeTree", "holds a cluster schema"),
        (CLUSTER, "ReplacingMergeTree", "holds a single-node schema"),
    ],
)
def test_a_schema_opened_in_the_other_mode_is_refused(
    cluster_name: str | None, ledger_engine: str, needle: str
) -> None:
    rec = Recorder(cluster_name, ledger_engine)
    with pytest.raises(MigrationError) as info:
        migrate.missing(cast(ClickHouse, rec))
    assert needle in info.value.message
    assert rec.commands == []


def test_an_existing_cluster_ledger_is_not_created_again() -> None:
    """serve and ingest check for migrations on start: on a cluster that runs no DDL."""
    rec = Recorder(CLUSTER, "ReplicatedReplacingMergeTree")
    assert migrate.missing(cast(ClickHouse, rec)) == [m.name for m in MIGRATIONS]
    assert rec.commands == []


def test_the_rendered_schema_is_created_by_a_chdb_configured_as_a_cluster_node(tmp_path: Path) -> None:
    """Replicated (read-only: no Keeper) and Distributed tables, views, drops: all accepted, and read."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.cluster_engine", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["failed"] == []
    assert result["parsed_only"] == [
        "0023_clicks_projections.sql: ALTER TABLE clicks_local MODIFY SETTING",
        "0023_clicks_projections.sql: ALTER TABLE clicks_local ADD PROJECTION",
        "0023_clicks_projections.sql: ALTER TABLE clicks_local MATERIALIZE PROJECTION",
        # Column changes of a replicated table need Keeper too (the Distributed table's ALTER runs).
        "0030_stores_platform.sql: ALTER TABLE stores_local ADD COLUMN",
        "0031_campaigns_recurring_months.sql: ALTER TABLE campaigns_local ADD COLUMN",
        "0032_conversions_customers.sql: ALTER TABLE conversions_local ADD COLUMN",
        "0040_campaigns_hold.sql: ALTER TABLE campaigns_local ADD COLUMN",
        "0041_conversions_lifecycle.sql: ALTER TABLE conversions_local ADD COLUMN",
        # ... and so do the statements that read the columns those add.
        "0043_conversion_versions_mv.sql: CREATE MATERIALIZED VIEW IF NOT",
        "0049_conversion_versions_fill.sql: INSERT INTO conversion_versions (brand_id, order_id,",
        "0050_api_key_scopes.sql: ALTER TABLE api_keys_local ADD COLUMN",
        "0060_conversions_quality.sql: ALTER TABLE conversions_local ADD COLUMN",
        "0065_influencers_email.sql: ALTER TABLE influencers_local ADD COLUMN",
        "0066_campaigns_attribution_priority.sql: ALTER TABLE campaigns_local ADD COLUMN",
        "0070_campaigns_fallback_archived.sql: ALTER TABLE campaigns_local ADD COLUMN",
        "0071_influencers_archived.sql: ALTER TABLE influencers_local ADD COLUMN",
        "0072_fees_deleted.sql: ALTER TABLE fees_local ADD COLUMN",
        "0074_conversion_ledger_mv.sql: CREATE MATERIALIZED VIEW IF NOT",
        "0075_conversion_ledger_fill.sql: INSERT INTO conversion_ledger (brand_id, occurred_at,",
        "0077_conversion_ledger_influencer_mv.sql: CREATE MATERIALIZED VIEW IF NOT",
        "0078_conversion_ledger_influencer_fill.sql: INSERT INTO conversion_ledger_influencer (brand_id, "
        "influencer_id,",
    ]
    engines = {name: engine for name, engine, _ in result["tables"]}
    full = {name: engine_full for name, _, engine_full in result["tables"]}
    for table in ("brands", "api_keys", "campaigns", "influencers", "links", "stores", "fees", "fx_rates",
                  "clicks", "conversions", "report_daily_uniques", "conversion_ledger", "conversion_ledger_influencer"):
        assert engines[table] == "Distributed"
        assert engines[f"{table}_local"] == "ReplicatedReplacingMergeTree"
        assert full[table].endswith(f"'{table}_local', cityHash64({'id' if table == 'brands' else 'brand_id'}))")
    assert engines["clicks_daily"] == "View"
    assert engines["schema_migrations"] == "ReplicatedReplacingMergeTree"
    # The wave-1 rollup views and the ledger's first order view were dropped; the ledger's views are live.
    assert not any(name.startswith("clicks_hourly") or name.endswith("_mv") for name in engines
                   if name not in ("conversion_ledger_mv", "conversion_ledger_influencer_mv", "conversion_moves_mv"))
    assert "conversion_order" not in engines and "conversion_order_local" not in engines
    # tracker's reads through the Distributed tables, with its cluster settings: the ledger
    # check (no DDL, every migration pending in the read-only ledger), FINAL, every report
    # grouping in two time zones (the tables are empty: this checks they plan and run).
    reads = result["reads"]
    assert reads.pop("pending migrations") == repr(len(MIGRATIONS))
    assert reads.pop("conversions FINAL") == "[(0,)]"
    # The ledger's tables are created whole (they name their columns), so its reads run.
    for name in ("ledger page", "ledger page filtered", "ledger page of an influencer"):
        assert reads.pop(name) == "([], None)", name
    assert reads.pop("ledger rows by key") == reads.pop("ledger rows of an influencer by key") == "[]"
    assert reads.pop("ledger conversion") == "None"
    assert (reads.pop("portal page"), reads.pop("portal commission by status")) == ("([], None)", "[]")
    assert len(reads) == 2 * (len(GROUP_KEYS) + 2)
    # Reports read columns that parsed-only ALTERs add (hold_days, review of 0041; country of 0060;
    # customer_hash of 0032): on this Keeper-less node those reads cannot run, for that reason alone;
    # everything else they read plans and runs (every report reads the conversions' new columns).
    assert all(value == "0" or value.startswith("needs column ") or "cannot be resolved" in value
               for value in reads.values()), reads


@pytest.mark.parametrize("cluster_name", [None, CLUSTER])
def test_the_client_sends_the_cluster_settings_only_on_a_cluster(
    http_server: ChdbHttpServer, cluster_name: str | None
) -> None:
    database = "t_" + uuid.uuid4().hex[:12]
    ch = ClickHouse.connect(
        Settings(clickhouse_url=f"{http_server.url}/{database}", clickhouse_cluster=cluster_name)
    )
    try:
        rows = ch.query(
            "SELECT name, value, default FROM system.settings WHERE name IN {names:Array(String)}",
            {"names": list(CLUSTER_SETTINGS)},
        )
        values = {name: value for name, value, _ in rows}
        if cluster_name is None:  # the engine's defaults: one node is unchanged
            assert values == {name: default for name, _, default in rows}
        else:
            assert values == {name: str(value) for name, value in CLUSTER_SETTINGS.items()}
        # The batch's token still drops a retried insert with these settings on.
        ch.command("CREATE TABLE t (brand_id String, n UInt32) ENGINE = MergeTree ORDER BY n "
                   "SETTINGS non_replicated_deduplication_window = 100")
        for _ in range(2):
            ch.insert("t", [["b", i] for i in range(5)], ["brand_id", "n"], dedup_token="batch-1")
        assert ch.query("SELECT count() FROM t") == [(5,)]
    finally:
        ch.command(f"DROP DATABASE IF EXISTS `{database}`")
        ch.close()


def test_the_cluster_setting_is_read_and_checked() -> None:
    env = {"REDIS_URL": "redis://r:6379/0", "CLICKHOUSE_URL": "http://u:p@ch:8123/tracker"}
    assert Settings.from_env(env).clickhouse_cluster is None
    assert Settings.from_env({**env, "TRACKER_CLICKHOUSE_CLUSTER": CLUSTER}).clickhouse_cluster == CLUSTER


@pytest.mark.parametrize(
    ("url", "name", "message"),
    [
        ("chdb:///tmp/ch", CLUSTER, "TRACKER_CLICKHOUSE_CLUSTER needs CLICKHOUSE_URL to name a ClickHouse server"),
        ("http://ch:8123/tracker", "my-cluster", "TRACKER_CLICKHOUSE_CLUSTER='my-cluster' is not a cluster name"),
    ],
)
def test_migrate_cluster_flag_refuses_chdb_and_bad_names_in_one_line(url: str, name: str, message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tracker.cli", "migrate", "--cluster", name],
        env={"PATH": "/usr/bin:/bin", "CLICKHOUSE_URL": url, "REDIS_URL": "redis://127.0.0.1:1/0"},
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"tracker: {message}")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_ingest_refuses_a_cluster_schema_without_the_cluster_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("CLICKHOUSE_URL", "http://ch:8123/tracker")
    monkeypatch.delenv("TRACKER_CLICKHOUSE_CLUSTER", raising=False)
    monkeypatch.setattr(ClickHouse, "connect", classmethod(
        lambda cls, settings, **kw: Recorder(settings.clickhouse_cluster, "ReplicatedReplacingMergeTree")
    ))
    monkeypatch.setattr(Recorder, "close", lambda self: None, raising=False)

    def never(*args: Any, **kw: Any) -> int:
        raise AssertionError("the worker started")

    monkeypatch.setattr("tracker.ingest.component.run_worker", never)
    monkeypatch.setattr("tracker.ops.logs.setup", lambda level: {})  # keep pytest's log handlers
    assert cli.main(["ingest", "--once"]) == cli.EXIT_MIGRATION
    assert "holds a cluster schema" in capsys.readouterr().err
