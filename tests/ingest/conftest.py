"""Every ingest test's ClickHouse records what is inserted into ``clicks`` (the oracle's audit)."""

from __future__ import annotations

import pytest

from tests.ingest_helpers import audit
from tracker.storage.clickhouse import ClickHouse


@pytest.fixture
def ch(ch: ClickHouse) -> ClickHouse:
    audit(ch)
    return ch
