"""A ClickHouse HTTP endpoint in front of chDB, one per test module that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chdb_server import ChdbHttpServer


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbHttpServer]:
    server = ChdbHttpServer(tmp_path_factory.mktemp("chdb-http") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()
