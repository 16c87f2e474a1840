"""Redis connections (async for the HTTP app, sync for the ingest worker).

The one place that knows how to reach Redis and how to judge whether it keeps
data across a restart: clicks live there until ingest moves them, so a server
without AOF or RDB would lose them.

``redis+cluster://host:port[,host:port...]`` opens redis-py's cluster client instead
(``RedisCluster``: it learns the slot map from any node named and follows MOVED
answers), and sets the tagged key layout (``keys.use_layout``). The few hot paths
that write packed commands on a connection of their own (the click log, the link
probe, the ingest reader) ask ``node_async``/``node_sync`` for a plain client of the
primary that owns a key.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.connection import AbstractConnection
from redis.cluster import ClusterNode as SyncClusterNode

from tracker.core import keys
from tracker.core.errors import SettingsError, StorageUnavailable
from tracker.settings import Settings


def _url(settings: Settings) -> str:
    if settings.redis_url is None:
        raise StorageUnavailable("No Redis URL: embedded Redis is not started yet.")
    return settings.redis_url


def is_cluster_url(url: str | None) -> bool:
    return url is not None and urlsplit(url).scheme.endswith("+cluster")


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The (host, port) pairs a ``redis+cluster://`` URL names (port 6379 by default)."""
    hosts = urlsplit(url).netloc.rpartition("@")[2]
    out = []
    for part in hosts.split(","):
        if part.strip():
            host, _, port = part.strip().rpartition(":") if ":" in part else (part.strip(), "", "6379")
            out.append((host.strip("[]"), int(port)))
    return out


def _cluster_opts(url: str) -> dict[str, Any]:
    """Credentials and TLS of a cluster URL, for every node."""
    parts = urlsplit(url)
    opts: dict[str, Any] = {}
    if parts.username:
        opts["username"] = unquote(parts.username)
    if parts.password:
        opts["password"] = unquote(parts.password)
    if parts.scheme.startswith("rediss"):
        opts["ssl"] = True
    return opts


def use_layout(settings: Settings) -> None:
    keys.use_layout(cluster=is_cluster_url(settings.redis_url), conversion_shards=settings.conversion_shards)


def connect_async(settings: Settings, **kw: Any) -> aioredis.Redis:
    """The app's client: ``redis.asyncio.Redis``, or ``RedisCluster`` (typed as Redis: same commands)."""
    use_layout(settings)
    opts: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 5, "health_check_interval": 30}
    opts.update(kw)
    url = _url(settings)
    if is_cluster_url(url):
        nodes = [AsyncClusterNode(h, p) for h, p in cluster_nodes(url)]
        opts.pop("health_check_interval")
        client: Any = aioredis.RedisCluster(startup_nodes=nodes, **_cluster_opts(url), **opts)
        return cast(aioredis.Redis, client)
    return aioredis.Redis.from_url(url, **opts)


def connect_sync(settings: Settings, **kw: Any) -> redis.Redis:
    use_layout(settings)
    opts: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 30, "health_check_interval": 30}
    opts.update(kw)
    url = _url(settings)
    if is_cluster_url(url):
        nodes = [SyncClusterNode(h, p) for h, p in cluster_nodes(url)]  # type: ignore[no-untyped-call]
        opts.pop("health_check_interval")
        client: Any = redis.RedisCluster(startup_nodes=nodes, **_cluster_opts(url), **opts)
        return cast(redis.Redis, client)
    return redis.Redis.from_url(url, **opts)


def is_cluster(client: Any) -> bool:
    return isinstance(client, (aioredis.RedisCluster, redis.RedisCluster))


async def primary_async(client: Any, key: str | bytes) -> tuple[str, int]:
    """(host, port) of the primary serving ``key``'s slot (the slot map is loaded when needed)."""
    if not client.nodes_manager.slots_cache:
        await client.initialize()
    node = client.get_node_from_key(key)
    return node.host, node.port


def primary_sync(client: Any, key: str | bytes) -> tuple[str, int]:
    node = client.get_node_from_key(key)
    return node.host, node.port


_NODE_OPTIONS = ("username", "password", "socket_connect_timeout", "socket_timeout", "socket_keepalive", "client_name")


def unpooled(client: aioredis.Redis) -> AbstractConnection:
    """A connection with ``client``'s settings, outside its pool and without a socket timeout of its
    own (a timeout per socket call runs every write in a task; its user puts one deadline on a batch)."""
    pool = client.connection_pool
    return pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})


async def connected(conn: AbstractConnection) -> AbstractConnection:
    """``conn`` connected; when connecting fails, its half-open socket is closed before the error goes on."""
    try:
        await conn.connect()  # type: ignore[no-untyped-call]
    except BaseException:
        await conn.disconnect()
        raise
    return conn


def _node_opts(kwargs: dict[str, Any]) -> dict[str, Any]:
    opts = {k: kwargs[k] for k in _NODE_OPTIONS if kwargs.get(k) is not None}
    if "SSL" in getattr(kwargs.get("connection_class"), "__name__", ""):
        opts["ssl"] = True
    return opts


def node_async(client: Any, host: str, port: int, **kw: Any) -> aioredis.Redis:
    """A plain async client of one cluster node, with the cluster client's credentials and timeouts."""
    return aioredis.Redis(host=host, port=port, **{**_node_opts(client.connection_kwargs), **kw})


def node_sync(client: Any, host: str, port: int) -> redis.Redis:
    return redis.Redis(host=host, port=port, **_node_opts(client.nodes_manager.connection_kwargs))


def persistence(info: dict[str, Any], config: dict[str, str] | None) -> tuple[bool, str]:
    """Decide from INFO persistence (and CONFIG GET when allowed) whether data survives a restart."""
    if int(info.get("aof_enabled", 0)) == 1:
        return True, "AOF"
    if config is not None:
        if config.get("appendonly", "no") == "yes":
            return True, "AOF"
        if config.get("save", "").strip():
            return True, "RDB snapshots (clicks since the last snapshot are lost on a crash)"
        return False, "appendonly no and no RDB save points"
    return False, "AOF is off and CONFIG GET is not allowed, so RDB save points cannot be checked"


async def check_persistence(client: aioredis.Redis, settings: Settings) -> str:
    """Raise SettingsError when Redis (on a cluster: any primary) would lose clicks on a restart (unless allowed)."""
    if is_cluster(client):
        cluster: Any = client
        if not cluster.nodes_manager.slots_cache:
            await cluster.initialize()
        judged = []
        for node in cluster.get_primaries():
            one = node_async(cluster, node.host, node.port)
            try:
                judged.append(await _judge(one))
            finally:
                await one.aclose()
        durable, how = next(((d, h) for d, h in judged if not d), judged[0])
    else:
        durable, how = await _judge(client)
    if not durable and not settings.allow_volatile_redis:
        raise SettingsError(
            f"REDIS_URL points to a Redis without persistence ({how}): clicks would be lost on a restart. "
            "Enable AOF (appendonly yes) or set TRACKER_ALLOW_VOLATILE_REDIS=1."
        )
    return how


async def _judge(client: aioredis.Redis) -> tuple[bool, str]:
    info = await client.info("persistence")
    config: dict[str, str] | None
    try:
        raw = {**await client.config_get("appendonly"), **await client.config_get("save")}
        config = {_text(k): _text(v) for k, v in raw.items()}
    except redis.ResponseError:
        config = None
    return persistence(info, config)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def mget_async(client: Any, names: list[str]) -> list[Any]:
    """MGET, split by slot on a cluster (one MGET may not cross slots there)."""
    if is_cluster(client):
        return list(await client.mget_nonatomic(names))
    return list(await client.mget(names))


class SyncNodes:
    """Plain clients of the primaries holding keys, for code that writes packed commands on
    a connection of its own (the ingest reader's MULTIs, raw XRANGE reads).

    On a single Redis every key maps to one client sharing ``client``'s pool. On a cluster a
    key maps to a client of its slot's primary; ``reset`` re-reads the slot map after a
    failure (a failover moves slots) and drops the node clients.
    """

    def __init__(self, client: Any, raw: tuple[str, ...] = ()) -> None:
        self.client = client
        self.cluster = is_cluster(client)
        self._raw = raw
        self._nodes: dict[tuple[str, int], redis.Redis] = {}
        self._single: redis.Redis | None = None
        self._stale = False

    def _prepare(self, node: redis.Redis) -> redis.Redis:
        for command in self._raw:
            node.set_response_callback(command, lambda response, **options: response)
        return node

    def for_key(self, key: str) -> redis.Redis:
        if not self.cluster:
            if self._single is None:
                self._single = self._prepare(redis.Redis(connection_pool=self.client.connection_pool))
            return self._single
        if self._stale:
            try:
                self.client.nodes_manager.initialize()
            except redis.exceptions.RedisClusterException as exc:  # no node answered: transient
                raise redis.ConnectionError(f"The Redis Cluster's slot map cannot be read: {exc}") from exc
            self._stale = False
        where = primary_sync(self.client, key)
        node = self._nodes.get(where)
        if node is None:
            node = self._nodes[where] = self._prepare(node_sync(self.client, *where))
        return node

    def group(self, streams: list[str]) -> list[tuple[redis.Redis, list[str]]]:
        """``streams`` by the client of their primary, in order of first appearance."""
        out: dict[int, tuple[redis.Redis, list[str]]] = {}
        for stream in streams:
            node = self.for_key(stream)
            out.setdefault(id(node), (node, []))[1].append(stream)
        return list(out.values())

    def reset(self) -> None:
        """After a Redis error: on a cluster, re-read the slot map before the next use."""
        if not self.cluster:
            return
        nodes, self._nodes = self._nodes, {}
        for node in nodes.values():
            node.close()
        self._stale = True

    def close(self) -> None:
        self.reset()
        self._stale = False
