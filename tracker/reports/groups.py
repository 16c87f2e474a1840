"""A report's groups: each key's sums, filled from query results column by column, then its rows.

Results arrive as columns (``ClickHouse.query_columns``). A group's key is the text of its key
fields as the answer shows them (dates ISO, cached link ids as their codes), so the rows of
every source of one group meet; its sums are one flat list of integers (``answer.Sums``, money
in integer units): no object per result row beyond the key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from typing import Any

from tracker.reports.answer import FEES, KEY_FIELDS, Sums, fill
from tracker.reports.units import Writer

# A query result by column (``ClickHouse.query_columns``).
Columns = Mapping[str, Sequence[Any]]


class Groups:
    def __init__(self, keys: tuple[str, ...], link_code_of: Mapping[int, str]) -> None:
        self.keys = keys
        self.columns = tuple(f"g_{k}" for k in keys)
        self._link_at = keys.index("link") if "link" in keys else -1
        self._link_code_of = link_code_of
        self.sums: dict[tuple[str, ...], Sums] = {}

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

    def add_clicks(self, cols: Columns, clicks: str | None, bot_clicks: str | None, uniques: str | None) -> None:
        """Click counts from the named columns (None: that count is not in these rows)."""
        zeros = [0] * len(cols[self.columns[0]])
        sums = self.sums
        get = sums.get
        for key, c, b, u in zip(
            self.key_texts(cols), cols[clicks] if clicks else zeros, cols[bot_clicks] if bot_clicks else zeros,
            cols[uniques] if uniques else zeros, strict=True,
        ):
            s = get(key)
            if s is None:
                sums[key] = [c, b, u, 0, 0, 0, 0, 0, 0, 0, 0]
            else:
                s[0] += c
                s[1] += b
                s[2] += u

    def add_conversions(self, cols: Columns) -> None:
        """Attributed conversions: count, flagged, revenue, commission and its three statuses."""
        sums = self.sums
        get = sums.get
        for key, n, f, rev, com, pend, pay, paid in zip(
            self.key_texts(cols), cols["conversions"], cols["flagged_conversions"], cols["revenue"],
            cols["commission"], cols["pending_commission"], cols["payable_commission"], cols["paid_commission"],
            strict=True,
        ):
            s = get(key)
            if s is None:
                sums[key] = [0, 0, 0, n, f, rev, com, pend, pay, paid, 0]
            else:
                s[3] += n
                s[4] += f
                s[5] += rev
                s[6] += com
                s[7] += pend
                s[8] += pay
                s[9] += paid

    def add_fees(self, cols: Columns) -> None:
        sums = self.sums
        get = sums.get
        for key, fee in zip(self.key_texts(cols), cols["fees"], strict=True):
            s = get(key)
            if s is None:
                sums[key] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, fee]
            else:
                s[FEES] += fee

    def rows(self, names: Mapping[str, Mapping[str, str]], write: Writer, fees_allocated: bool) -> list[dict[str, Any]]:
        """The answer's rows, sorted by key; key fields in the answer model's order (json_bytes sends
        the dicts as they are), then the metrics."""
        order = sorted(range(len(self.keys)), key=lambda i: list(KEY_FIELDS).index(self.keys[i]))
        # (key position, field, its name's field and the names, or None)
        fields = [(i, KEY_FIELDS[self.keys[i]][0], KEY_FIELDS[self.keys[i]][-1], names.get(self.keys[i]))
                  for i in order]
        sums = self.sums
        keys = sorted(sums)
        out: list[dict[str, Any]] = []
        for key in keys:
            row: dict[str, Any] = {}
            for i, field, name_field, of in fields:
                row[field] = v = key[i]
                if of is not None:
                    row[name_field] = of.get(v)
            out.append(row)
        fill(zip(out, map(sums.__getitem__, keys), strict=True), write, fees_allocated)
        return out
