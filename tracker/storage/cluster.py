"""The schema on a ClickHouse cluster: Replicated local tables, Distributed tables by brand.

``tracker migrate --cluster NAME`` (or ``TRACKER_CLICKHOUSE_CLUSTER``) applies the same
numbered migrations as one node, each statement passed through ``render``: a pure
function, SQL in, statements out, that either follows the rules below or refuses the
statement with an error naming the migration file. Nothing is guessed.

Each rule, statement in a migration -> what runs (every DDL ``ON CLUSTER NAME``):

- ``CREATE TABLE t (...) ENGINE = XMergeTree(args)`` -> ``t_local`` with
  ``ReplicatedXMergeTree('/clickhouse/tables/{shard}/{database}/t', '{replica}', args)``,
  then ``t`` as ``Distributed(NAME, db, t_local, cityHash64(brand_id))``.
- The same for a table in ``EVERY_NODE`` (the ``schema_migrations`` ledger) -> one
  Replicated table on every node, its Keeper path without ``{shard}``: any node reads
  the whole ledger.
- ``CREATE MATERIALIZED VIEW v TO t AS SELECT ... FROM s`` -> ``TO t_local ... FROM
  s_local``: each node folds the rows its shard receives into its own part of ``t``.
- ``CREATE VIEW v AS SELECT ... FROM t`` -> unchanged: the view reads the Distributed ``t``.
- ``ALTER TABLE t`` with projection, index, TTL or setting commands -> on ``t_local``
  (projections live inside the local parts, so each shard rolls up its own rows).
- ``ALTER TABLE t ADD/DROP/MODIFY/RENAME/COMMENT COLUMN`` -> on ``t_local``, then the
  column commands on ``t``.
- ``DROP TABLE t`` / ``DROP VIEW v`` -> ``t`` then ``t_local`` / ``v``, each ``SYNC`` (so a
  Keeper path is free at once).
- ``INSERT INTO t ... SELECT ... FROM s`` -> unchanged: through the Distributed tables,
  each row routed to its brand's shard.
- Anything else is refused: ``RENAME``, ``TRUNCATE``, mutations, ``db.t`` names, a
  statement that already says ``ON CLUSTER``, engines outside the MergeTree family, a
  materialized view reading more than one table.

Refused too: a table with no ``brand_id`` column (``brands`` is sharded by ``id``,
its brand), a materialized view that does not select ``brand_id`` as is, and a
folding engine (Replacing-, Aggregating-, Summing-, Collapsing-) whose ``ORDER BY``
lacks ``brand_id`` unless ``SAME_SHARD`` says why one key's rows share a shard anyway.

Why that makes ``FINAL`` exact. On a Distributed table ``FINAL`` is applied by each
shard to its own rows, then the shards' answers are concatenated: it folds exactly the
rows that share a sort key *on one shard*. Every table is sharded by
``cityHash64(brand_id)`` over the same cluster, so all rows of a brand live on one
shard, and every ReplacingMergeTree key contains ``brand_id`` (or, for ``api_keys``,
determines it): the rows of one key never sit on two shards, so per-shard ``FINAL``
equals ``FINAL`` over the whole table. Reports always filter by one brand, so they
also run on one shard. Rollups fed by materialized views stay correct for the same
reason: the view runs on the node that received the rows and writes its own shard.

Ingest keeps its per-batch deduplication token: the client on a cluster
(``tracker.storage.clickhouse``) inserts with ``distributed_foreground_insert = 1``, so the
insert into a Distributed table returns once every shard holds its rows, and the
shard inserts carry the query's settings, the token among them. A retried batch
splits the same way (the sharding key is deterministic) and each shard drops the
sub-block it already has: Replicated tables record the token in Keeper with the part.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tracker.core.errors import MigrationError
from tracker.storage.sqltext import Statement, head

if TYPE_CHECKING:
    from tracker.storage.clickhouse import ClickHouse

LOCAL_SUFFIX = "_local"
SHARD_COLUMN = "brand_id"
# Tables whose brand sits in another column.
SHARD_COLUMNS = {"brands": "id"}
# Tables every node needs whole: replicated to every node, no Distributed table.
EVERY_NODE = frozenset({"schema_migrations"})
# Folding tables whose sort key lacks the brand, and why one key's rows still share a shard.
SAME_SHARD = {"api_keys": "every version of a key carries the brand it was issued to"}

_MERGE_TREE = re.compile(
    r"(Replacing|Summing|Aggregating|Collapsing|VersionedCollapsing|Graphite|Coalescing)?MergeTree"
)
_CLAUSES = {"PARTITION", "PRIMARY", "SAMPLE", "TTL", "SETTINGS", "COMMENT"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# ALTER commands that change only the stored parts, and those that change columns (both tables).
_ALTER_LOCAL = {
    *((verb, "PROJECTION") for verb in ("ADD", "DROP", "MATERIALIZE", "CLEAR")),
    *((verb, "INDEX") for verb in ("ADD", "DROP", "MATERIALIZE", "CLEAR")),
    ("MODIFY", "SETTING"), ("RESET", "SETTING"), ("MODIFY", "TTL"), ("REMOVE", "TTL"), ("MATERIALIZE", "TTL"),
}
_ALTER_COLUMNS = {(verb, "COLUMN") for verb in ("ADD", "DROP", "MODIFY", "RENAME", "COMMENT")}


class _Refused(Exception):
    """The reason a statement has no safe cluster form (becomes a MigrationError)."""


def render(sql: str, *, cluster: str, database: str, source: str) -> list[str]:
    """The statements that apply ``sql`` (one migration statement) to ``cluster``.

    ``source`` names where ``sql`` comes from (``"Migration 0009_clicks.sql"``) for the
    error raised when a statement has no safe cluster form.
    """
    for value, what in ((cluster, "cluster"), (database, "database")):
        if not _NAME.fullmatch(value):
            raise MigrationError(f"{what.capitalize()} name {value!r} is not a plain name (letters, digits, _).")
    st = Statement(sql)
    try:
        if not st.balanced:
            raise _Refused("its parentheses do not balance")
        if any(st.at(i, "ON", "CLUSTER") for i in range(len(st))):
            raise _Refused("it already names a cluster; migrations are written for one node")
        return _Renderer(st, cluster, database).render()
    except _Refused as exc:
        raise MigrationError(f"{source} cannot be applied to cluster {cluster}: {exc} (in: {head(sql)})") from None


def local_name(name: str) -> str:
    return name if name in EVERY_NODE else name + LOCAL_SUFFIX


class _Renderer:
    def __init__(self, st: Statement, cluster: str, database: str) -> None:
        self.st = st
        self.cluster = cluster
        self.database = database
        self.on = f" ON CLUSTER {cluster}"

    def render(self) -> list[str]:
        st = self.st
        if st.at(0, "CREATE", "TABLE"):
            return self.create_table()
        if st.at(0, "CREATE", "MATERIALIZED", "VIEW"):
            return self.create_materialized_view()
        if st.at(0, "CREATE", "VIEW") or st.at(0, "CREATE", "OR", "REPLACE", "VIEW"):
            return self.create_view()
        if st.at(0, "ALTER", "TABLE"):
            return self.alter()
        if st.at(0, "DROP", "TABLE") or st.at(0, "DROP", "VIEW"):
            return self.drop()
        if st.at(0, "INSERT", "INTO"):
            return self.insert()
        kind = " ".join(w for w in (st.word(0), st.word(1)) if w) or "this"
        raise _Refused(f"{kind} statements have no cluster form here")

    def name_at(self, i: int, what: str = "table") -> str:
        if not self.st.plain_name(i):
            raise _Refused(f"the {what} must be named by a plain name (no database, quotes or function)")
        return self.st.text(i)

    def after_if(self, i: int, *words: str) -> tuple[int, str]:
        """Skip ``IF [NOT] EXISTS`` at ``i``; returns the next index and the words to repeat."""
        if self.st.at(i, "IF", *words):
            return i + 1 + len(words), " ".join(("IF", *words)) + " "
        return i, ""

    def span(self, i: int, new: str) -> tuple[int, int, str]:
        token = self.st.tokens[i]
        return token.start, token.end, new

    def create_table(self) -> list[str]:
        st = self.st
        i, if_not = self.after_if(2, "NOT", "EXISTS")
        name = self.name_at(i)
        if st.text(i + 1) != "(":
            raise _Refused("CREATE TABLE needs its own column list (the AS forms are not rendered)")
        close = st.closing(i + 1)
        columns = {st.text(a).strip("`") for a, _ in st.split(i + 2, close)}
        e = st.find("ENGINE", start=close + 1)
        if e is None:
            raise _Refused(f"table {name} names no ENGINE")
        j = e + 2 if st.text(e + 1) == "=" else e + 1
        engine, end, args = st.text(j), j, ""
        if not _MERGE_TREE.fullmatch(engine):
            raise _Refused(f"engine {engine} has no Replicated form (only the MergeTree family replicates)")
        if st.text(j + 1) == "(":
            end = st.closing(j + 1)
            args = st.source(j + 2, end).strip()
        shard = SHARD_COLUMNS.get(name, SHARD_COLUMN)
        if name in EVERY_NODE:
            path, replica = f"/clickhouse/tables/all/{{database}}/{name}", "{shard}-{replica}"
        else:
            path, replica = f"/clickhouse/tables/{{shard}}/{{database}}/{name}", "{replica}"
            self.check_sharding(name, shard, columns, engine, end)
        engine_sql = f"Replicated{engine}('{path}', '{replica}'{', ' + args if args else ''})"
        local = local_name(name)
        out = [st.edit([self.span(i, local + self.on), (st.tokens[j].start, st.tokens[end].end, engine_sql)])]
        if name not in EVERY_NODE:
            out.append(
                f"CREATE TABLE {if_not}{name}{self.on} AS {local}\n"
                f"ENGINE = Distributed('{self.cluster}', '{self.database}', '{local}', cityHash64({shard}))"
            )
        return out

    def check_sharding(self, name: str, shard: str, columns: set[str], engine: str, engine_end: int) -> None:
        st = self.st
        if shard not in columns:
            raise _Refused(f"table {name} has no {shard} column to shard by (see cluster.SHARD_COLUMNS)")
        if engine == "MergeTree" or name in SAME_SHARD:
            return
        order = st.find("ORDER", "BY", start=engine_end + 1)
        if order is None:
            raise _Refused(f"table {name} has no ORDER BY")
        clauses = (k for k in range(order + 2, len(st)) if st.tokens[k].depth == 0 and st.word(k) in _CLAUSES)
        stop = next(clauses, len(st))
        if shard not in st.words(order + 2, stop):
            raise _Refused(
                f"{engine} folds rows by its sort key and table {name}'s ORDER BY lacks {shard}: rows of one "
                "key could sit on two shards, where FINAL cannot fold them"
            )

    def create_materialized_view(self) -> list[str]:
        st = self.st
        i, _ = self.after_if(3, "NOT", "EXISTS")
        self.name_at(i, "view")
        if st.word(i + 1) != "TO":
            raise _Refused("a materialized view must write TO a table (the inner-table form is not rendered)")
        target = self.name_at(i + 2, "target table")
        a = st.find("AS", start=i + 3)
        if a is None or st.word(a + 1) != "SELECT":
            raise _Refused("a materialized view must be AS SELECT")
        body = [st.word(k) for k in range(a + 1, len(st))]
        if body.count("SELECT") > 1 or {"JOIN", "UNION", "INTERSECT"} & set(body):
            raise _Refused("a materialized view must read one table: no JOIN, UNION or subquery")
        f = st.find("FROM", start=a + 2)
        if f is None or st.find("FROM", start=f + 1) is not None:
            raise _Refused("a materialized view must read exactly one table")
        source = self.name_at(f + 1, "source table")
        if st.text(f + 2) == "(":
            raise _Refused("a materialized view must read a table, not a table function")
        if not any(b - a2 == 1 and st.text(a2) == SHARD_COLUMN for a2, b in st.split(a + 2, f)):
            raise _Refused(
                f"a materialized view must select {SHARD_COLUMN} as it is, so what it writes stays on its brand's shard"
            )
        return [
            st.edit([
                self.span(i, st.text(i) + self.on),
                self.span(i + 2, local_name(target)),
                self.span(f + 1, local_name(source)),
            ])
        ]

    def create_view(self) -> list[str]:
        st = self.st
        start = 4 if st.at(1, "OR", "REPLACE") else 2
        i, _ = self.after_if(start, "NOT", "EXISTS")
        name = self.name_at(i, "view")
        if st.word(i + 1) != "AS":
            raise _Refused("a view must be CREATE VIEW name AS SELECT")
        return [st.edit([self.span(i, name + self.on)])]

    def alter(self) -> list[str]:
        st = self.st
        name = self.name_at(2)
        settings = st.find("SETTINGS", start=3)
        column_commands = []
        for a, b in st.split(3, len(st) if settings is None else settings):
            command = (st.word(a), st.word(a + 1))
            if command in _ALTER_COLUMNS:
                column_commands.append(st.source(a, b))
            elif command not in _ALTER_LOCAL:
                raise _Refused(
                    f"ALTER TABLE ... {' '.join(w for w in command if w) or st.text(a)} is not a command the cluster "
                    "renderer applies (projections, indexes, TTL, settings and column changes are)"
                )
        out = [st.edit([self.span(2, local_name(name) + self.on)])]
        if column_commands and name not in EVERY_NODE:
            out.append(f"ALTER TABLE {name}{self.on} {', '.join(column_commands)}")
        return out

    def drop(self) -> list[str]:
        st = self.st
        kind = st.word(1)
        i, if_exists = self.after_if(2, "EXISTS")
        name = self.name_at(i, kind.lower())
        if len(st) > i + 1 and not (len(st) == i + 2 and st.word(i + 1) == "SYNC"):
            raise _Refused("a DROP must name one table, with no clause but SYNC")
        names = [name] if kind == "VIEW" or name in EVERY_NODE else [name, local_name(name)]
        return [f"DROP {kind} {if_exists}{n}{self.on} SYNC" for n in names]

    def insert(self) -> list[str]:
        st = self.st
        i = 3 if st.word(2) == "TABLE" else 2
        if st.word(i) == "FUNCTION":
            raise _Refused("an INSERT must write a table, not a table function")
        self.name_at(i)
        return [st.sql]


def statements(ch: ClickHouse, sql: str, source: str) -> list[str]:
    """``sql`` as ``ch`` runs it: unchanged on one node, rendered on a cluster."""
    if ch.cluster is None:
        return [sql]
    return render(sql, cluster=ch.cluster, database=ch.database, source=source)


def table(ch: ClickHouse, name: str) -> str:
    """The table that stores ``name``'s rows on the node ``ch`` is connected to."""
    return name if ch.cluster is None else local_name(name)


def check_mode(ch: ClickHouse) -> str | None:
    """Refuse a cluster schema opened without the cluster setting, and the reverse.

    Migrations applied that way would create one node's tables, and ingest would insert
    without waiting for the shards. Returns the ledger's engine (None: no ledger yet).
    """
    rows = ch.query(
        "SELECT engine FROM system.tables WHERE database = {db:String} AND name = 'schema_migrations'",
        {"db": ch.database},
    )
    engine = str(rows[0][0]) if rows else None
    replicated = engine is not None and engine.startswith("Replicated")
    if replicated and ch.cluster is None:
        raise MigrationError(
            f"ClickHouse database {ch.database} holds a cluster schema (its schema_migrations is replicated): "
            "set TRACKER_CLICKHOUSE_CLUSTER to the cluster's name."
        )
    if engine is not None and not replicated and ch.cluster is not None:
        raise MigrationError(
            f"ClickHouse database {ch.database} holds a single-node schema, not one for cluster {ch.cluster}: "
            "unset TRACKER_CLICKHOUSE_CLUSTER, or migrate a new database with --cluster."
        )
    return engine


def prepare_ledger(ch: ClickHouse, ledger: str) -> None:
    """Create the migrations ledger unless present, after ``check_mode``.

    One node: ``CREATE TABLE IF NOT EXISTS`` as always. A cluster: the database and the
    ledger are created on every node the first time only, so that ``serve`` starting up
    runs no DDL across the cluster.
    """
    engine = check_mode(ch)
    if ch.cluster is None:
        ch.command(ledger)
    elif engine is None:
        ch.command(f"CREATE DATABASE IF NOT EXISTS `{ch.database}` ON CLUSTER {ch.cluster}")
        for sql in statements(ch, ledger, "The migrations ledger"):
            ch.command(sql)
