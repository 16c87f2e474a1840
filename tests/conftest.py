"""Fixtures: a real Redis and a clean ClickHouse database on chDB for every test.

Redis: ``TEST_REDIS_URL`` when set (CI starts Debian's redis-server, one per
pytest-xdist worker), else an embedded Valkey started once per test process.
Each test gets a flushed database.
ClickHouse: one chDB engine per test process (chDB allows one). The migrations
run once per process into a template database; each test gets an empty database
of the template's cached DDL (``tests/schema_cache.py``): one the pool emptied
after an earlier test, or a new one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests import xdist_order
from tests.schema_cache import DatabasePool, SchemaCache
from tracker.core import keys
from tracker.settings import Settings
from tracker.storage import migrate
from tracker.storage.clickhouse import ClickHouse
from tracker.storage.embedded import EmbeddedRedis

ADMIN_TOKEN = "tka_test_admin_token_0123456789"
SECRET_KEY = "test-secret-key-0123456789abcdefghijklmnop"


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ... under pytest-xdist
    return int(worker.removeprefix("gw")) if worker else 0


# Test files (chDB parts, AOFs, spools, each test's tmp_path) go to /dev/shm when it is a tmpfs with room:
# the suite writes and fsyncs a few hundred MB, and on a disk that costs it a tenth of its time in the kernel.
_SHM = Path("/dev/shm")
_SHM_ROOM = 2 << 30


def _use_shm_for_temporary_files() -> None:
    if "TMPDIR" in os.environ or os.environ.get("PYTEST_XDIST_WORKER") or not _SHM.is_dir():
        return
    try:
        mounts = Path("/proc/self/mounts").read_text()
        fs = os.statvfs(_SHM)
    except OSError:
        return
    tmpfs = any(line.split()[1:3] == [str(_SHM), "tmpfs"] for line in mounts.splitlines())
    if tmpfs and fs.f_bavail * fs.f_frsize >= _SHM_ROOM:
        os.environ["TMPDIR"] = str(_SHM)  # inherited by the xdist workers and every server a test starts
        tempfile.tempdir = None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    _use_shm_for_temporary_files()
    # xdist gives each worker <basetemp>/popen-gwN; the shorter <basetemp>/gwN keeps a Valkey
    # socket under tmp_path below the 100 characters EmbeddedRedis allows for a Unix socket path.
    basetemp = config.option.basetemp
    if os.environ.get("PYTEST_XDIST_WORKER") and basetemp and Path(basetemp).name.startswith("popen-"):
        config.option.basetemp = str(Path(basetemp).with_name(Path(basetemp).name.removeprefix("popen-")))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The slow modules (subprocess servers, fault injection) start early, spread over the
    # pytest-xdist workers by their expected seconds (tests/xdist_order.py). Every worker
    # collects and orders alike, as xdist requires.
    items[:] = xdist_order.order(items, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server of this test process's own.

    ``TEST_REDIS_URL`` holds one URL, or one per pytest-xdist worker separated by spaces:
    workers cannot share a server, since tests flush all of it (Redis losing its data) and
    read its server-wide command stats. A worker without a URL starts an embedded Valkey.
    """
    urls = os.environ.get("TEST_REDIS_URL", "").split()
    if _worker_index() < len(urls):
        yield urls[_worker_index()]
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("valkey"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _plain_key_layout() -> Iterator[None]:
    """Opening a Redis Cluster switches the process to the tagged key layout: back to the plain one."""
    yield
    keys.use_layout(cluster=False, conversion_shards=1)


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb").resolve()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, redis_url: str, chdb_dir: Path, tmp_path: Path, redis_client: redis.Redis
) -> Settings:
    """Production-style settings on the test Redis and a chDB database of the test's own."""
    # A test on the `ch` below names a database of the pool; `migrated_ch` (and the migration
    # tests' `ch` built on it) must start from nothing, so it gets a name never used.
    if "ch" in request.fixturenames and "migrated_ch" not in request.fixturenames:
        database = request.getfixturevalue("databases").name()
    else:
        database = "t_" + uuid.uuid4().hex[:12]
    return Settings(
        redis_url=redis_url,
        clickhouse_url=f"chdb://{chdb_dir}",
        clickhouse_database=database,
        data_dir=tmp_path,
        admin_token=ADMIN_TOKEN,
        secret_key=SECRET_KEY,
        hashids_salt="test-salt",
        public_url="http://testserver",
        ingest_batch_seconds=0.05,
        embedded=False,
    )


@pytest.fixture(scope="session")
def template(chdb_dir: Path) -> Iterator[ClickHouse]:
    """A database the real migrations built, once per test process."""
    settings = Settings(clickhouse_url=f"chdb://{chdb_dir}", clickhouse_database="template_" + uuid.uuid4().hex[:12])
    client = ClickHouse.connect(settings)
    migrate.migrate(client)
    try:
        yield client
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{client.database}`")


@pytest.fixture(scope="session")
def schema(template: ClickHouse) -> SchemaCache:
    return SchemaCache.capture(template)


@pytest.fixture(scope="session")
def databases(template: ClickHouse, schema: SchemaCache) -> Iterator[DatabasePool]:
    pool = DatabasePool(template, schema)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def ch(settings: Settings, databases: DatabasePool) -> Iterator[ClickHouse]:
    """An empty database with the migrated schema and its ledger, from the cached DDL."""
    # The template's client prepares it: one chDB client less per test than ClickHouse.connect's bootstrap.
    databases.prepare(settings.clickhouse_database)
    client = ClickHouse.connect(settings, create_database=False)
    try:
        yield client
    finally:
        databases.release(settings.clickhouse_database)


@pytest.fixture
def migrated_ch(settings: Settings) -> Iterator[ClickHouse]:
    """A fresh database built by the real migrations, for the tests of the migrations themselves."""
    client = ClickHouse.connect(settings)
    migrate.migrate(client)
    try:
        yield client
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{client.database}`")


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A Valkey this test may stop and start again (same Unix socket, AOF kept)."""
    directory = Path(tempfile.mkdtemp(prefix="rd", dir="/tmp"))  # short: a Unix socket path is bounded
    server = EmbeddedRedis(directory)
    server.start()
    assert server.url.startswith("unix://")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
