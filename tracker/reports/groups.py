"""A report's groups: each key's sums, filled from query results column by column, then its rows.

Results arrive as columns (``ClickHouse.query_columns``). A group's key is the text of its key
fields as the answer shows them (dates ISO, cached link ids as their codes), so the rows of
every source of one group meet. The sums are kept by column too (``answer.Sums``: counts, money
in integer units), a group being one position in every column: adding a source is a loop of
integer additions per column, and the rows come out of the columns in C (6,000 of them for
influencer x day).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from itertools import repeat
from typing import Any, cast

from tracker.reports.answer import KEY_FIELDS, Sums, metric_columns
from tracker.reports.units import Writer

# A query result by column (``ClickHouse.query_columns``).
Columns = Mapping[str, Sequence[Any]]


class Groups:
    def __init__(self, keys: tuple[str, ...], link_code_of: Mapping[int, str]) -> None:
        self.keys = keys
        self.columns = tuple(f"g_{k}" for k in keys)
        self._link_at = keys.index("link") if "link" in keys else -1
        self._link_code_of = link_code_of
        self.index: dict[tuple[str, ...], int] = {}  # key -> its position in the columns of sums
        self.sums: Sums = [[] for _ in range(11)]

    def key_texts(self, cols: Columns) -> Iterator[tuple[str, ...]]:
        """Each result row's group key, one at a time: a key that finds its group is dropped at
        once (a list of them all would hold ~6,000 tuples and wake the cycle collector)."""
        return zip(*(self._texts(cols[c], i == self._link_at) for i, c in enumerate(self.columns)), strict=True)

    def _texts(self, values: Sequence[Any], link: bool) -> Sequence[Any]:
        distinct = set(values)
        if all(type(v) is str for v in distinct):
            return values
        # Cached click rows carry link ids; raw click rows, conversions and fees carry codes.
        text = {
            v: v if type(v) is str else self._link_code_of.get(int(v), "") if link
            else v.isoformat() if isinstance(v, date) else str(v)
            for v in distinct
        }
        return [text[v] for v in values]

    def add(self, cols: Columns, metrics: Mapping[int, str]) -> None:
        """Add each row's named columns to its group's sums (``answer.Sums`` position -> column)."""
        index, sums = self.index, self.sums
        if not index:
            keys = list(self.key_texts(cols))
            index.update(zip(keys, range(len(keys)), strict=True))
            if len(index) == len(keys):  # the first source, one row per group: its columns as they are
                for m in range(len(sums)):
                    sums[m] = list(cols[metrics[m]]) if m in metrics else [0] * len(keys)
                return
            index.clear()
        found = list(map(index.get, self.key_texts(cols)))
        at = cast("list[int]", found)
        if None in found:
            before = len(index)
            # A new key takes the next position (len(index) is read before the key goes in).
            at = [index.setdefault(key, len(index)) for key in self.key_texts(cols)]
            for column in sums:
                column.extend([0] * (len(index) - before))
        for m, name in metrics.items():
            column = sums[m]
            for i, value in zip(at, cols[name], strict=True):
                column[i] += value

    def rows(self, names: Mapping[str, Mapping[str, str]], write: Writer, fees_allocated: bool) -> list[dict[str, Any]]:
        """The answer's rows, sorted by key; key fields in the answer model's order (json_bytes sends
        the dicts as they are), then the metrics."""
        index = self.index
        keys = sorted(index)
        at = [index[k] for k in keys]
        fields: list[tuple[str, Sequence[Any]]] = []
        for i in sorted(range(len(self.keys)), key=lambda i: list(KEY_FIELDS).index(self.keys[i])):
            key = self.keys[i]
            values = [k[i] for k in keys]
            fields.append((KEY_FIELDS[key][0], values))
            if key in names:
                fields.append((KEY_FIELDS[key][1], list(map(names[key].get, values))))
        fields += metric_columns([[column[i] for i in at] for column in self.sums], write, fees_allocated)
        # Every column has a value per group; zip's strict check costs ~1.5 ms a report here.
        return list(map(dict, map(zip, repeat([name for name, _ in fields]),
                                  zip(*(values for _, values in fields), strict=False))))
