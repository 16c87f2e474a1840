"""One loaded data set per test module (its own chDB database), parts left unmerged."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reports.dataset import (
    Data,
    build_data,
    fill_facts,
    load,
)
from tracker.settings import Settings
from tracker.storage import migrate
from tracker.storage.clickhouse import ClickHouse


@pytest.fixture(scope="module")
def data() -> Data:
    return build_data()


@pytest.fixture(scope="module")
def loaded(chdb_dir: Path, data: Data) -> Iterator[ClickHouse]:
    settings = Settings(clickhouse_url=f"chdb://{chdb_dir}", clickhouse_database="r_" + uuid.uuid4().hex[:12])
    client = ClickHouse.connect(settings)
    migrate.migrate(client)
    # Parts stay unmerged, so FINAL and the rollup's merge step do the work.
    for table in ("clicks", "conversions", "fees"):
        client.command(f"SYSTEM STOP MERGES {table}")
    load(client, data)
    fill_facts(client)
    try:
        yield client
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{client.database}`")

