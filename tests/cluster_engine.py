"""Run the cluster schema in a chDB set up as one node of a one-shard cluster (a subprocess).

``python -m tests.cluster_engine WORKDIR`` prints one JSON object. chDB reads a server
config file, so it knows the ``{shard}``/``{replica}`` macros and a ``tracker_cluster`` in
``remote_servers`` whose one replica is this process (``tcp_port`` matches, so it is
local), and a ``testkeeper`` entry so Replicated tables can be declared. No Keeper
actually answers (replicas start read-only) and chDB runs no distributed DDL, so:

- each rendered statement runs without its ``ON CLUSTER`` clause (what every node of a
  cluster runs when the DDL reaches it), with the settings tracker's client sends on a
  cluster;
- Replicated tables are created (the engine checks their arguments, macros, version
  column, sharding key) but stay read-only, so ``ALTER``s of the ``_local`` tables are
  only parsed, and nothing is inserted;
- then tracker's own reads run through the Distributed tables on tracker's client: the
  migrations check, a ``FINAL`` read and every report grouping (on empty tables).

chDB allows one engine per process and this one has its own config, hence the
subprocess; it prints its result and leaves with ``os._exit`` while the session is still
open, because closing it can hang or abort on the read-only replicas' background threads.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

CLUSTER = "tracker_cluster"
DATABASE = "tracker"

CONFIG = f"""<clickhouse>
    <tcp_port>9000</tcp_port>
    <zookeeper><implementation>testkeeper</implementation></zookeeper>
    <macros><shard>01</shard><replica>r1</replica></macros>
    <remote_servers>
        <{CLUSTER}>
            <shard><internal_replication>true</internal_replication>
                <replica><host>localhost</host><port>9000</port></replica>
            </shard>
        </{CLUSTER}>
    </remote_servers>
</clickhouse>
"""


def main(workdir: Path) -> None:
    import clickhouse_connect

    from tracker.core import cursors
    from tracker.money import ledger
    from tracker.portal import ledger as portal
    from tracker.reports.params import GROUP_KEYS, ReportParams
    from tracker.reports.run import run_report
    from tracker.storage import cluster, migrate
    from tracker.storage.clickhouse import CLUSTER_SETTINGS, ClickHouse

    config = workdir / "config.xml"
    config.write_text(CONFIG)
    path = f"{workdir / 'data'}?config-file={config}"
    clickhouse_connect.get_client(interface="chdb", path=path).command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    # tracker's own client, with the settings it sends on a cluster.
    client = clickhouse_connect.get_client(interface="chdb", path=path, database=DATABASE, settings=CLUSTER_SETTINGS)
    ch = ClickHouse(client, DATABASE, CLUSTER)

    executed: list[str] = []
    parsed_only: list[str] = []
    failed: list[str] = []
    rendered = [("ledger", sql) for sql in cluster.render(
        migrate._LEDGER, cluster=CLUSTER, database=DATABASE, source="The ledger"
    )]
    for m in migrate.discover():
        for statement in m.statements():
            rendered += [(m.name, sql) for sql in cluster.render(
                statement, cluster=CLUSTER, database=DATABASE, source=f"Migration {m.name}"
            )]
    # Columns the parsed-only ALTERs would add: a later statement naming one is parsed only too.
    unadded: set[str] = set()
    for source, sql in rendered:
        node_sql = sql.replace(f" ON CLUSTER {CLUSTER}", "")
        try:
            if node_sql.startswith("ALTER TABLE ") and node_sql.split()[2].endswith(cluster.LOCAL_SUFFIX):
                ch.query(f"EXPLAIN AST {node_sql}")
                parsed_only.append(f"{source}: {' '.join(node_sql.split()[:5])}")
                unadded |= set(re.findall(r"ADD COLUMN (?:IF NOT EXISTS )?(\w+)", node_sql))
            else:
                ch.command(node_sql)
                executed.append(source)
        except Exception as exc:  # reported to the test, which names the statement
            missing = re.search(r"Unknown expression identifier `(\w+)`", str(exc))
            if missing and missing[1] in unadded:
                ch.query(f"EXPLAIN AST {node_sql}")
                parsed_only.append(f"{source}: {' '.join(node_sql.split()[:5])}")
                continue
            failed.append(f"{source}: {' '.join(node_sql.split())[:120]}: {' '.join(str(exc).split())[:300]}")
    tables = ch.query(
        "SELECT name, engine, engine_full FROM system.tables WHERE database = {db:String} ORDER BY name",
        {"db": DATABASE},
    )
    # Reads through the Distributed tables, as tracker makes them (the tables are empty).
    reads: dict[str, str] = {}

    def read(name: str, fn: Callable[[], object]) -> None:
        try:
            reads[name] = repr(fn())
        except Exception as exc:
            # A column a parsed-only ALTER would add (no Keeper here): the read cannot run on this node.
            missing = re.search(r"Identifier '(?:\w+\.)?(\w+)' cannot be resolved|Unknown expression identifier "
                                r"`(?:\w+\.)?(\w+)`", str(exc))
            column = missing and (missing[1] or missing[2])
            if column and column in unadded:
                reads[name] = f"needs column {column}"
                return
            reads[name] = f"error: {' '.join(str(exc).split())[:300]}"

    read("pending migrations", lambda: len(migrate.missing(ch)))
    read("conversions FINAL", lambda: ch.query("SELECT count() FROM conversions FINAL"))
    # The ledger's reads: keys without FINAL, rows by key with FINAL and PREWHERE, paid lines among ids.
    now = datetime(2026, 11, 30, tzinfo=UTC)
    after = cursors.encode(now, "cnv_cluster")
    read("ledger page", lambda: ledger.page(ch, "brd_cluster", {}, now, 100, after))
    read("ledger page filtered", lambda: ledger.page(ch, "brd_cluster", {"campaign_id": "cmp_1", "commission_status":
                                                                          "paid"}, now, 100, None))
    read("ledger page of an influencer", lambda: ledger.page(ch, "brd_cluster", {"influencer_id": "inf_1"}, now,
                                                             100, after))
    read("ledger rows by key", lambda: ledger.rows_by_key(ch, "brd_cluster", now, [(now, "cnv_cluster")]))
    read("ledger rows of an influencer by key", lambda: ledger.rows_by_key(
        ch, "brd_cluster", now, [(now, "cnv_cluster")], "inf_1"))
    read("ledger conversion", lambda: ledger.one(ch, "brd_cluster", "cnv_cluster", now))
    read("portal page", lambda: portal.page(ch, "brd_cluster", "inf_1", now, now, 100, after))
    read("portal commission by status", lambda: portal.commission_by_status(ch, "brd_cluster", "inf_1", now, now,
                                                                           "USD"))
    brand = {"id": "brd_cluster", "name": "Cluster", "currency": "USD"}
    for group_by in ((), *((key,) for key in GROUP_KEYS), ("influencer", "day")):
        for tz in ("UTC", "Asia/Kolkata"):
            params = ReportParams(date(2026, 11, 1), date(2026, 11, 30), group_by=group_by, tz=tz)
            read(f"report {','.join(group_by) or 'totals'} {tz}",
                 lambda p=params: run_report(ch, brand, p, 400).totals["clicks"])
    result = {
        "executed": len(executed),
        "parsed_only": parsed_only,
        "failed": failed,
        "tables": [list(row) for row in tables],
        "reads": reads,
    }
    # Written while the engine is open: closing it (or letting it be collected) can hang
    # or abort on the read-only replicas' background threads.
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
