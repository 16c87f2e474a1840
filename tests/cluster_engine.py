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
  only parsed, and nothing is inserted.

chDB allows one engine per process and this one has its own config, hence the
subprocess; it prints its result and leaves with ``os._exit`` while the session is still
open, because closing it can hang or abort on the read-only replicas' background threads.
"""

from __future__ import annotations

import json
import os
import sys
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
    from chdb import session

    from tracker.storage import cluster, migrate
    from tracker.storage.clickhouse import CLUSTER_SETTINGS

    config = workdir / "config.xml"
    config.write_text(CONFIG)
    db = session.Session(f"{workdir / 'data'}?config-file={config}")

    def run(sql: str) -> str:
        return str(db.query(sql, "TSV")).strip()

    run(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    run(f"USE {DATABASE}")
    for name, value in CLUSTER_SETTINGS.items():  # as tracker's client on a cluster sends them
        run(f"SET {name} = {value!r}")
    executed: list[str] = []
    parsed_only: list[str] = []
    failed: list[str] = []
    ledger = cluster.render(migrate._LEDGER, cluster=CLUSTER, database=DATABASE, source="The ledger")
    rendered = [("ledger", sql) for sql in ledger]
    for m in migrate.discover():
        for statement in m.statements():
            rendered += [(m.name, sql) for sql in cluster.render(
                statement, cluster=CLUSTER, database=DATABASE, source=f"Migration {m.name}"
            )]
    for source, sql in rendered:
        node_sql = sql.replace(f" ON CLUSTER {CLUSTER}", "")
        try:
            if node_sql.startswith("ALTER TABLE ") and node_sql.split()[2].endswith(cluster.LOCAL_SUFFIX):
                run(f"EXPLAIN AST {node_sql}")
                parsed_only.append(f"{source}: {' '.join(node_sql.split()[:5])}")
            else:
                run(node_sql)
                executed.append(source)
        except Exception as exc:  # reported to the test, which names the statement
            failed.append(f"{source}: {' '.join(node_sql.split())[:120]}: {' '.join(str(exc).split())[:300]}")
    tables = run(
        f"SELECT name, engine, engine_full FROM system.tables WHERE database = '{DATABASE}' "
        "ORDER BY name FORMAT JSONCompactEachRow"
    )
    reads = {}
    for query in (
        "SELECT count() FROM clicks FINAL",
        "SELECT count() FROM conversions FINAL",
        "SELECT count() FROM clicks_daily WHERE brand_id = 'b'",
        "SELECT count() FROM schema_migrations FINAL",
    ):
        try:
            reads[query] = run(query)
        except Exception as exc:
            reads[query] = f"error: {' '.join(str(exc).split())[:300]}"
    result = {
        "executed": len(executed),
        "parsed_only": parsed_only,
        "failed": failed,
        "tables": [json.loads(line) for line in tables.splitlines()],
        "reads": reads,
    }
    # Written while the session is open: closing it (or letting it be collected) can hang
    # or abort on the read-only replicas' background threads.
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
