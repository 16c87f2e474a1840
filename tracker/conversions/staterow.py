"""An order's state row: typed and at its currency's scale, from Redis' JSON or a ClickHouse row.

``normalize_row`` is the one shape every reader of a conversion row works on; ``decode_state``
reads the JSON state Redis holds (every replay reads one); ``check_fits`` is the column check
a version passes before it is written. ``tracker.conversions.state`` stores and reads the rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from tracker.core import money
from tracker.core.errors import Unprocessable
from tracker.core.events import CONVERSION_COLUMNS, CONVERSION_DEFAULTS
from tracker.core.timeutil import utc

_MONEY_COLUMNS = ("amount", "refunded_amount", "commission")
_ORIGINAL_COLUMNS = ("original_amount", "original_refunded_amount")
_TIME_COLUMNS = ("occurred_at", "created_at", "updated_at")
_INT_COLUMNS = ("version", "attributed", "link_id", "hold_days", "review")
_TYPED = frozenset((*_INT_COLUMNS, *_MONEY_COLUMNS, *_ORIGINAL_COLUMNS, *_TIME_COLUMNS, "fx_rate"))
_TEXT_COLUMNS = tuple(c for c in CONVERSION_COLUMNS if c not in _TYPED)


def normalize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Typed values (from the JSON state or a ClickHouse row) with money at its currency's scale."""
    try:
        out = {c: row[c] for c in CONVERSION_COLUMNS}
    except KeyError:
        # Columns added after the first rows were written: a state or a row without them has their default.
        out = {c: row[c] if c in row or c not in CONVERSION_DEFAULTS else CONVERSION_DEFAULTS[c]
               for c in CONVERSION_COLUMNS}
    for c in _INT_COLUMNS:
        out[c] = int(out[c])
    _money(out)
    for c in _TIME_COLUMNS:
        value = out[c]
        out[c] = utc(datetime.fromisoformat(value) if isinstance(value, str) else value)
    _text(out, _TEXT_COLUMNS)
    return out


def _text(out: dict[str, Any], columns: tuple[str, ...]) -> None:
    """``columns`` of ``out`` as text, in place: str() only where a value is not text already."""
    for c in columns:
        value = out[c]
        if type(value) is not str:
            out[c] = str(value)


def _money(out: dict[str, Any]) -> None:
    """The money columns and the rate of ``out``, typed in place (``decode_replay`` reads them too)."""
    # Every replay decodes its order's state: the quantum once per currency, and str() only where
    # a value is not text already (the JSON state's never is), are the same values for less.
    quantum = money.quantum(out["currency"])
    for c in _MONEY_COLUMNS:
        out[c] = money.round_to(Decimal(str(out[c])), quantum)
    quantum = money.quantum(out["original_currency"])
    for c in _ORIGINAL_COLUMNS:
        out[c] = money.round_to(Decimal(str(out[c])), quantum)
    out["fx_rate"] = Decimal(str(out["fx_rate"])).normalize()


def check_fits(row: Mapping[str, Any]) -> None:
    """Unprocessable unless every money value of ``row`` fits its Decimal(18, 4) column.

    Checked before a version is written: a row that cannot be inserted would be answered
    202 and then dead-lettered by ingest (a VND brand, a USD order of 4,000,000,000.00
    at 25,000 is 10^14 VND, one digit too many).
    """
    for column in (*_MONEY_COLUMNS, *_ORIGINAL_COLUMNS):
        value = row[column]
        if isinstance(value, Decimal) and money.fits_column(value):
            continue
        currency = row["original_currency" if column in _ORIGINAL_COLUMNS else "currency"]
        detail = (
            f"The order's amount {row['original_amount']} {row['original_currency']} is {row['amount']} "
            f"{row['currency']} at the rate {row['fx_rate']}"
            if column not in _ORIGINAL_COLUMNS and row["currency"] != row["original_currency"]
            else f"The order's {column.replace('_', ' ')} {value} {currency}"
        )
        raise Unprocessable(
            f"{detail}: more than tracker can store ({money.MONEY_COLUMN_MAX} {currency}).", code="amount_too_large"
        )


# msgspec's C decoder reads a state (~1 KB, every replay reads one) in a third of json.loads' time, to
# the same values; what it refuses that json.loads takes (a lone surrogate escape, a number beyond
# float range) is read by json.loads, so every state decodes as before.
_JSON = msgspec.json.Decoder()


def decode_state(raw: bytes | str) -> dict[str, Any]:
    try:
        decoded = _JSON.decode(raw)
    except msgspec.DecodeError:
        decoded = json.loads(raw)
    return normalize_row(decoded)


class _Replay(msgspec.Struct):
    """The columns a replay reads (``answer.answer_json`` and the duplicate check): msgspec skips the
    others (times, hashes, the reason) without building them."""

    conversion_id: Any
    order_id: Any
    status: Any
    attributed: Any
    attribution: Any
    link_code: Any
    influencer_id: Any
    campaign_id: Any
    commission: Any
    amount: Any
    refunded_amount: Any
    currency: Any
    original_amount: Any
    original_refunded_amount: Any
    original_currency: Any
    fx_rate: Any


_REPLAY = msgspec.json.Decoder(_Replay)
_REPLAY_TEXT = tuple(f for f in _Replay.__struct_fields__ if f in _TEXT_COLUMNS)


def decode_replay(raw: bytes | str) -> dict[str, Any] | None:
    """``_Replay``'s columns of a state, each the value ``decode_state`` gives it, for half its cost
    (most postbacks a store sends twice only need these); None when msgspec refuses the state or it
    lacks one of them: ``decode_state`` then reads it (or fails) as before. A state lacking a column
    no replay reads is answered here, where ``decode_state`` would fail (``encode_conversion``
    writes every column, so only a hand-edited state can)."""
    try:
        out = msgspec.structs.asdict(_REPLAY.decode(raw))
    except msgspec.DecodeError:  # ValidationError (a column missing) is one too
        return None
    out["attributed"] = int(out["attributed"])
    _money(out)
    _text(out, _REPLAY_TEXT)
    return out
