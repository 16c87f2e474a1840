"""A postback's answer as JSON bytes, straight from the order's row.

``Conversion.of(row, duplicate).dump()`` through ``tracker.api.http.dumps`` builds and
validates a pydantic model, dumps it to a dict and encodes that: a tenth of a postback's
cost, for an answer whose every field is already typed in the row. ``answer_json`` writes
the same bytes directly (a test compares the two on many rows); ``Conversion`` stays the
documented shape (OpenAPI) and the answer of the platform routes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from json.encoder import encode_basestring as _s  # C-accelerated; what json.dumps(ensure_ascii=False) uses
from typing import Any


def _opt(value: Any) -> str:
    """A text field answered as null when empty."""
    return _s(value) if value else "null"


def answer_json(row: Mapping[str, Any], duplicate: bool) -> bytes:
    """Byte for byte ``dumps(Conversion.of(row, duplicate).dump())``."""
    fx: Decimal = row["fx_rate"]
    return (
        f'{{"conversion_id":{_s(row["conversion_id"])},"order_id":{_s(row["order_id"])},'
        f'"status":{_s(row["status"])},"attributed":{"true" if row["attributed"] else "false"},'
        f'"attribution":{_opt(row["attribution"])},"link_code":{_opt(row["link_code"])},'
        f'"influencer_id":{_opt(row["influencer_id"])},"campaign_id":{_opt(row["campaign_id"])},'
        f'"commission":"{row["commission"]}","amount":"{row["amount"]}",'
        f'"refunded_amount":"{row["refunded_amount"]}","currency":{_s(row["currency"])},'
        f'"original_amount":"{row["original_amount"]}","original_refunded_amount":"{row["original_refunded_amount"]}",'
        f'"original_currency":{_s(row["original_currency"])},"fx_rate":"{fx.normalize():f}",'
        f'"duplicate":{"true" if duplicate else "false"}}}'
    ).encode()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a postback did to its order: the order's row after it, and whether it changed nothing."""

    row: Mapping[str, Any]
    duplicate: bool

    def json(self) -> bytes:
        return answer_json(self.row, self.duplicate)
