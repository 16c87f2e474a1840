"""Registry records cached in Redis for the hot paths (redirect, postback attribution).

Leaf module. The registry writes them through on create and update; readers
rebuild them from ClickHouse when Redis lost them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LinkRecord:
    id: int
    code: str
    brand_id: str
    campaign_id: str
    influencer_id: str
    destination_url: str
    coupon_code: str
    disabled: bool
    expires_at_ms: int | None
    click_id_param: str
    attribution_window_days: int

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> LinkRecord:
        data: dict[str, Any] = json.loads(raw)
        return cls(**data)
