"""Batches, pure: stream entries as a worker holds them, decoded to columns, deduplicated, named.

Snuba's processor step. Nothing here talks to Redis or ClickHouse, so which entries become
which rows is tested without either; the reader fills batches, the writer inserts them.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import pyarrow as pa

from tracker.core.events import CLICK_COLUMNS, CONVERSION_COLUMNS
from tracker.ingest import enrich
from tracker.ingest.delivery import Range, text

Fields = dict[bytes, bytes]
Columns = Mapping[str, Sequence[Any]]
Poison = tuple[str, Fields, str]  # entry id, its fields, why it cannot become a row


class TableColumns(Mapping[str, Sequence[Any]]):
    """A batch's columns as the Arrow table the Arrow path built (inserted as it is).

    A column becomes a Python list only when something asks for it by name
    (deduplication, replays, splitting or settling a batch).
    """

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._lists: dict[str, list[Any]] = {}

    def __getitem__(self, name: str) -> list[Any]:
        if name not in self._lists:
            self._lists[name] = self.table.column(name).to_pylist()
        return self._lists[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.table.column_names)

    def __len__(self) -> int:
        return int(self.table.num_columns)


@dataclass(frozen=True)
class Dependent:
    """A table a materialized view fills from every insert into a kind's table.

    ClickHouse commits the view's part after the table's own, so a worker killed in between
    (chDB inside the embedded worker, or a server that dies) leaves rows that the table has and
    this table lacks, and the resumed batch finds them landed. The writer checks this table by
    key whenever it checks the kind's table (a resumed or retried batch) and inserts what is
    missing itself, with the view's expressions: the batch's columns of the same name, and the
    time of the repair for ``stamped`` (the view's ``now64(3)``).
    """

    table: str
    key_columns: tuple[str, ...]
    key_type: str  # ClickHouse type of one key, for the bound array of the check
    columns: tuple[str, ...]
    stamped: tuple[str, ...] = ()
    only: tuple[str, str] | None = None  # the view's WHERE column = value: the rows it takes

    def keys_of(self, cols: Columns) -> list[Hashable]:
        return list(zip(*(cols[c] for c in self.key_columns), strict=True))

    def rows_of(self, cols: Columns) -> list[int]:
        """The indexes of the rows the view takes."""
        if self.only is None:
            return list(range(n_rows(cols)))
        column, value = self.only
        return [i for i, v in enumerate(cols[column]) if v == value]


@dataclass(frozen=True)
class Kind:
    """How one stream's entries become rows of one table."""

    name: str
    table: str
    columns: tuple[str, ...]
    decode: Callable[[bytes], list[Any]]  # one payload -> one row; ValueError = poison
    decode_many: Callable[[Sequence[bytes]], Columns] | None  # fast path; ValueError -> one by one
    key_columns: tuple[str, ...]  # what makes a row unique (deduplicated inside a batch)
    arrow_types: dict[str, Any]
    replays: bool  # entries may be replays (r=1) of an entry that already landed
    # Arrow path, tried first: payloads -> the finished table; ValueError -> decode_many.
    decode_table: Callable[[Sequence[bytes]], pa.Table] | None = None
    insert_settings: dict[str, Any] = field(default_factory=dict)
    dependents: tuple[Dependent, ...] = ()

    def keys_of(self, cols: Columns) -> list[Hashable]:
        if len(self.key_columns) == 1:
            return list(cols[self.key_columns[0]])
        return list(zip(*(cols[c] for c in self.key_columns), strict=True))

    def arrow(self, cols: Columns) -> pa.Table:
        if isinstance(cols, TableColumns):
            return cols.table
        return pa.table({c: pa.array(cols[c], type=self.arrow_types.get(c, pa.string())) for c in self.columns})


_TS = pa.timestamp("ms", tz="UTC")
CLICKS = Kind(
    "clicks", "clicks", CLICK_COLUMNS, enrich.decode_click, enrich.click_columns, ("click_id",),
    {"ts": _TS, "link_id": pa.uint64(), "visitor_hash": pa.uint64(), "is_bot": pa.uint8()},
    True,
    decode_table=enrich.click_table,
    # A batch never holds a click id twice (deduplicated above), so ReplacingMergeTree's
    # merge of the inserted block finds nothing to fold; skipping it halves the insert's CPU.
    insert_settings={"optimize_on_insert": 0},
)
_MONEY = pa.decimal128(18, 4)
_LEDGER_COLUMNS = (
    "brand_id", "occurred_at", "conversion_id", "order_id", "version", "status", "attributed", "attribution",
    "link_code", "influencer_id", "campaign_id", "store_id", "currency", "amount", "refunded_amount",
    "original_amount", "original_currency", "commission", "hold_days", "review", "reason", "updated_at",
)
CONVERSIONS = Kind(
    "conversions", "conversions", CONVERSION_COLUMNS, enrich.decode_conversion, None,
    ("brand_id", "order_id", "version"),
    {
        "version": pa.uint64(), "amount": _MONEY, "refunded_amount": _MONEY, "original_amount": _MONEY,
        "original_refunded_amount": _MONEY, "fx_rate": pa.decimal128(18, 8), "commission": _MONEY,
        "attributed": pa.uint8(), "link_id": pa.uint64(), "hold_days": pa.uint16(), "review": pa.uint8(),
        "occurred_at": _TS, "created_at": _TS, "updated_at": _TS,
    },
    False,
    dependents=(
        # Migration 0043: every version, kept after the merges of conversions fold them.
        Dependent(
            "conversion_versions", ("brand_id", "order_id", "version"), "Tuple(String, String, UInt64)",
            (
                "brand_id", "order_id", "version", "conversion_id", "status", "currency", "amount", "refunded_amount",
                "commission", "attribution", "link_code", "campaign_id", "influencer_id", "review", "change",
                "occurred_at", "updated_at",
            ),
            stamped=("recorded_at",),
        ),
        # Migrations 0074 and 0077: the ledger's rows, in page order, and by influencer.
        *(Dependent(table, ("brand_id", "order_id", "version"), "Tuple(String, String, UInt64)", _LEDGER_COLUMNS)
          for table in ("conversion_ledger", "conversion_ledger_influencer")),
        # Migration 0081: the versions of re-attributed conversions.
        Dependent("conversion_moves", ("brand_id", "order_id", "version"), "Tuple(String, String, UInt64)",
                  ("brand_id", "conversion_id", "version", "influencer_id", "order_id"),
                  only=("attribution", "manual")),
    ),
)


def take(cols: Columns, idx: Sequence[int]) -> Columns:
    if isinstance(cols, TableColumns):
        return TableColumns(cols.table.take(pa.array(idx, pa.int64())))
    return {c: [v[i] for i in idx] for c, v in cols.items()}


def n_rows(cols: Columns) -> int:
    if isinstance(cols, TableColumns):
        return int(cols.table.num_rows)
    return len(next(iter(cols.values()), ()))


class Entries:
    """Stream entries as a worker holds them: their ids, and per entry the value of its field
    ``e`` when that is its only field (bytes: what the redirect and postbacks write), else its
    whole field list (a replay's ``r=1``, a malformed entry).

    Compact on purpose: a reply's nested lists are dropped as soon as it is read, so a
    buffered batch holds no object the garbage collector tracks per entry. (Held as lists
    they made full collections walk every buffered entry, under the GIL, inside the
    embedded server's process: a stall of the redirects there.)
    """

    __slots__ = ("_plain", "ids", "values")

    def __init__(self, ids: list[Any] | None = None, values: list[Any] | None = None) -> None:
        self.ids: list[Any] = ids if ids is not None else []
        self.values: list[Any] = values if values is not None else []
        self._plain: bool | None = None if self.values else True

    @classmethod
    def from_raw(cls, raw: Sequence[Any]) -> Entries:
        """From Redis's raw entries ``[[id, [field, value, ...]], ...]``."""
        if not raw:
            return cls()
        ids = list(map(itemgetter(0), raw))
        fields = list(map(itemgetter(1), raw))
        if all(fields) and set(map(len, fields)) == {2} and set(map(itemgetter(0), fields)) == {b"e"}:
            plain = cls(ids, list(map(itemgetter(1), fields)))  # C calls only
            plain._plain = True
            return plain
        return cls(ids, [f[1] if f and len(f) == 2 and f[0] == b"e" else list(f or ()) for f in fields])

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, other: Entries) -> None:
        self._plain = self._plain and other._plain  # known without a pass when both are known
        self.ids.extend(other.ids)
        self.values.extend(other.values)

    def subset(self, idx: Iterable[int]) -> Entries:
        idx = list(idx)
        return Entries([self.ids[i] for i in idx], [self.values[i] for i in idx])

    def id(self, i: int) -> str:
        return text(self.ids[i])

    def fields(self, i: int) -> list[bytes]:
        v = self.values[i]
        return [b"e", v] if isinstance(v, bytes) else list(v)

    def plain(self) -> bool:
        """Every entry has the one field ``e``."""
        if self._plain is None:
            self._plain = set(map(type, self.values)) <= {bytes}
        return self._plain


def pairs(fields: Sequence[bytes]) -> Fields:
    """A raw field list ``[field, value, ...]`` as a dict."""
    return dict(zip(fields[::2], fields[1::2], strict=False))


def is_replay(value: bytes | list[bytes]) -> bool:
    """A click the redirect replayed from its spool (``r=1``): its first XADD may have landed."""
    return not isinstance(value, bytes) and pairs(value).get(b"r") == b"1"


def decode(kind: Kind, entries: Entries) -> tuple[list[int] | None, Columns, list[Poison]]:
    """Entries -> (indices of the entries that became rows, None for all; their columns;
    poison entries with the reason).

    Entries whose first field is ``e`` (every entry the redirect and the postbacks write)
    take the kind's fast paths: the Arrow path, then the column path; a batch either path
    refuses (an escaped character, a malformed entry) is decoded one entry at a time.
    """
    if kind.decode_table or kind.decode_many:
        payloads: list[Any] | None = entries.values
        if not entries.plain():  # replays carry r=1 after e; anything else is decoded one by one
            led = all(isinstance(v, bytes) or (len(v) >= 2 and v[0] == b"e") for v in entries.values)
            payloads = [v if isinstance(v, bytes) else v[1] for v in entries.values] if led else None
        if payloads is not None and kind.decode_table is not None:
            with contextlib.suppress(TypeError, ValueError):
                return None, TableColumns(kind.decode_table(payloads)), []
        if payloads is not None and kind.decode_many is not None:
            with contextlib.suppress(TypeError, ValueError):
                return None, kind.decode_many(payloads), []
    rows: list[int] = []
    values: list[list[Any]] = []
    poison: list[Poison] = []
    for i in range(len(entries)):
        fields = pairs(entries.fields(i))
        try:
            values.append(kind.decode(fields[b"e"]))
            rows.append(i)
        except KeyError:
            poison.append((entries.id(i), fields, "malformed entry: no field e"))
        except ValueError as exc:
            poison.append((entries.id(i), fields, f"malformed entry: {exc}"))
    cols: Columns = {c: [] for c in kind.columns}
    if values:
        cols = dict(zip(kind.columns, zip(*values, strict=True), strict=True))
    return rows, cols, poison


def without_skipped(entries: Entries, ranges: Sequence[Range]) -> Entries:
    """Leave out the entries a resumed range already dead-lettered (its ``skip``)."""
    skip = frozenset().union(*(r.skip for r in ranges))
    if not skip:
        return entries
    return entries.subset(i for i in range(len(entries)) if entries.id(i) not in skip)


def first_of_each_key(kind: Kind, cols: Columns) -> list[int] | None:
    """Positions of the rows to keep when a key is in the batch twice (a redirect retried its
    XADD, a postback its version); None when every key is there once."""
    if isinstance(cols, TableColumns):  # the Arrow path refuses a batch with a key twice
        return None
    row_keys = kind.keys_of(cols)
    if len(set(row_keys)) == len(row_keys):
        return None
    seen: set[Hashable] = set()
    keep = []
    for i, k in enumerate(row_keys):
        if k not in seen:
            seen.add(k)
            keep.append(i)
    return keep


def replayed(entries: Entries, rows: list[int] | None, candidates: Iterable[int]) -> list[int]:
    """The positions among ``candidates`` whose entry is a replay (``is_replay``)."""
    entry_of = (lambda i: i) if rows is None else rows.__getitem__
    return [i for i in candidates if is_replay(entries.values[entry_of(i)])]


def keep_rows(rows: list[int] | None, cols: Columns, keep: list[int] | None) -> tuple[list[int] | None, Columns]:
    """Rows (entry indices) and columns restricted to the positions ``keep`` (None: all)."""
    if keep is None:
        return rows, cols
    return [rows[i] if rows is not None else i for i in keep], take(cols, keep)


def ms(ts: Any) -> int:
    """Epoch milliseconds of a click time (the fast path keeps ms, the row path datetimes)."""
    return ts if isinstance(ts, int) else int(ts.timestamp() * 1000)


@dataclass
class Batch:
    """Rows of one stream's ranges on their way to ClickHouse."""

    stream: str
    kind: Kind
    ranges: list[Range]
    entries: Entries  # the entries the rows come from, in stream order
    rows: list[int] | None  # indices into ``entries`` of the rows to insert; None: every entry
    cols: Columns
    token: str
    # > 0: resumed or retried; its rows may be in ClickHouse already, so they are checked first.
    attempts: int = 0

    def row_ids(self) -> list[str]:
        idx = range(len(self.entries)) if self.rows is None else self.rows
        return [self.entries.id(i) for i in idx]


@dataclass
class Buffer:
    """What one stream's reads gathered for its next batch."""

    ranges: list[Range] = field(default_factory=list)
    entries: Entries = field(default_factory=Entries)
    since: float = 0.0


def range_token(stream: str, ranges: Sequence[Range], ids: Sequence[str] = ()) -> str:
    """Insert deduplication token of a batch: a hash of its stream and its ranges.

    A batch read without a recorded range has none; its entry ids name it instead.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(stream.encode())
    h.update("".join(f",({r.start},{r.end}]" for r in ranges).encode())
    h.update("".join("," + i for i in ids).encode())
    first = ranges[0].first if ranges else (ids[0] if ids else "-")
    return f"{stream}:{first}:{sum(r.n for r in ranges) + len(ids)}:{h.hexdigest()}"
