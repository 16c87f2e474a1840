"""Link records for the redirect: an in-process cache over Redis over ClickHouse.

The redirect never touches ClickHouse on its hot path. A code is looked up in
this process's dict first; a miss reads ``keys.link(code)`` from Redis (written
by the registry on create and update) and, when Redis lost it, asks the registry
to rebuild it from ClickHouse (and writes it back with ``SET NX``, so a newer
record written meanwhile by an update is never overwritten).

Freshness: an entry is fresh for ``settings.link_cache_seconds``; after that it
is still served for a short grace while one background task re-reads it, so a
link change reaches every worker within ``MAX_STALENESS_SECONDS`` (5 s, the
contract) without a request ever waiting on Redis for a known code. When Redis
is unreachable, stale entries are served for as long as it takes.

Each record is prepared once (``Target``) into the pieces the Location header
is assembled from, so a click costs string concatenation, not URL parsing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Mapping
from json.encoder import encode_basestring as _json_string  # C-accelerated, ensure_ascii=False
from typing import Literal, Protocol
from urllib.parse import quote, quote_from_bytes, unquote_to_bytes, urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tracker.core import keys
from tracker.core.errors import StorageUnavailable
from tracker.core.records import LinkRecord
from tracker.redirect.codeset import CodeSet
from tracker.redirect.probe import Probe, Reply

log = logging.getLogger("tracker.redirect.linkcache")

MAX_STALENESS_SECONDS = 4.5  # below the contract's 5 s, leaving time for the refresh itself
MAX_ENTRIES = 100_000
_RETRY_SECONDS = 1.0

# A query string that needs no re-encoding (the common case): unreserved and
# sub-delimiter characters and well-formed percent escapes only.
_SAFE_QUERY = re.compile(rb"(?:[A-Za-z0-9\-._~!$'()*+,;=:@/?&]|%[0-9A-Fa-f]{2})*")
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"
_UNSAFE_URL_CHAR = re.compile(r"[\x00-\x20\x7f]")


def _decode(raw: bytes) -> str:
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", "replace")


def parse_query(query: bytes) -> list[tuple[str, bytes]]:
    """Visitor query pieces as (decoded key, piece safe to put in a URL), in order.

    A piece is kept byte for byte when it is already well encoded, else it is
    decoded and re-encoded, so nothing a visitor sends can break the Location header.
    """
    if not query:
        return []
    safe = _SAFE_QUERY.fullmatch(query) is not None
    out: list[tuple[str, bytes]] = []
    for piece in query.split(b"&"):
        if not piece:
            continue
        key, eq, value = piece.partition(b"=")
        name = _decode(key)
        if not safe:
            key_raw = unquote_to_bytes(key.replace(b"+", b" "))
            piece = quote_from_bytes(key_raw, safe="").encode("ascii")
            if eq:
                value_raw = unquote_to_bytes(value.replace(b"+", b" "))
                piece += b"=" + quote_from_bytes(value_raw, safe="").encode("ascii")
        out.append((name, piece))
    return out


def query_value(piece: bytes) -> str:
    """The decoded value of a query piece ("" when it has none)."""
    return _decode(piece.partition(b"=")[2])


class Target:
    """A link record prepared for redirects: the Location header in pieces."""

    __slots__ = ("dest_pairs", "event_link", "fragment", "head", "param", "param_eq", "prefix", "record")

    def __init__(self, record: LinkRecord) -> None:
        self.record = record
        # The click event's link fields, JSON-encoded once (see ``redirect.encode_click``).
        self.event_link = (
            f",{_json_string(record.brand_id)},{_json_string(record.campaign_id)},"
            f"{_json_string(record.influencer_id)},{int(record.id)},{_json_string(record.code)},"
        )
        url = record.destination_url
        if not url.isascii() or _UNSAFE_URL_CHAR.search(url):
            url = _ascii_url(url)  # also keeps CR/LF and spaces out of the Location header
        url, _, fragment = url.partition("#")
        prefix, _, query = url.partition("?")
        self.param = record.click_id_param
        self.param_eq = (quote(self.param, safe="") + "=").encode("ascii")
        pairs = []
        for piece in query.split("&"):
            if piece:
                name = _decode(piece.partition("=")[0].encode("ascii"))
                if name != self.param:
                    pairs.append((name, piece.encode("ascii")))
        self.dest_pairs: tuple[tuple[str, bytes], ...] = tuple(pairs)
        self.prefix = prefix.encode("ascii")
        self.fragment = ("#" + fragment).encode("ascii") if fragment else b""
        head = self.prefix + b"?" + b"".join(p + b"&" for _, p in self.dest_pairs)
        self.head = head + self.param_eq

    def location(self, click_id: str, visitor: list[tuple[str, bytes]]) -> bytes:
        """Destination query kept, visitor's pieces forwarded (visitor wins a clash, the
        click-id parameter is the server's), click id last, fragment kept."""
        if not visitor:
            return self.head + click_id.encode("ascii") + self.fragment
        param = self.param
        names = {name for name, _ in visitor}
        pieces = [p for name, p in self.dest_pairs if name not in names]
        pieces.extend(p for name, p in visitor if name != param)
        pieces.append(self.param_eq + click_id.encode("ascii"))
        return self.prefix + b"?" + b"&".join(pieces) + self.fragment


def _ascii_url(url: str) -> str:
    """An IRI as a URI: IDNA host, percent-encoded path and query (registries may accept IRIs)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    host = parts.hostname or ""
    if host and not host.isascii():
        try:
            netloc = netloc.replace(host, host.encode("idna").decode("ascii"))
        except UnicodeError:
            netloc = quote(netloc, safe=_URL_SAFE)
    rest = url[len(parts.scheme) + 3 + len(parts.netloc) :] if parts.netloc else url[len(parts.scheme) + 1 :]
    head = f"{parts.scheme}://{netloc}" if parts.netloc else f"{parts.scheme}:"
    return head + quote(rest, safe=_URL_SAFE)


class _Entry:
    __slots__ = ("expires", "refreshing", "target")

    def __init__(self, target: Target, expires: float) -> None:
        self.target = target
        self.expires = expires
        self.refreshing = False


class LinkSource(Protocol):
    """The registry's links (``tracker.registry.linkindex.LinkIndex``)."""

    async def link_by_code(self, code: str) -> LinkRecord | None:
        """A link Redis lost, rebuilt from ClickHouse (and written back)."""

    async def stored_link(self, code: str) -> LinkRecord | None:
        """The link as ClickHouse has it, without touching Redis (Redis is down)."""

    async def codes_since(self, since_ms: int | None) -> list[str]:
        """Codes of the links created since a time (every code when None)."""


class LinkCache:
    """``await get(code)``: the prepared link, None when no link has this code.

    With a registry, a code the code set lacks costs no lookup beyond one batched Redis
    read (``Probe``), and a link Redis cannot give (down, or lost it) is read from
    ClickHouse. Raises ``StorageUnavailable`` only when neither Redis nor ClickHouse
    answers for a code this process has never seen.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        ttl: float,
        registry: LinkSource | None = None,
    ) -> None:
        self._redis = redis
        self._ttl = ttl
        self._grace = max(0.0, MAX_STALENESS_SECONDS - ttl)
        self._registry = registry
        self.codes = CodeSet(registry.codes_since) if registry is not None else None
        self._probe = Probe(redis)
        self._entries: dict[str, _Entry] = {}
        self.entries: Mapping[str, object] = self._entries  # read-only view: the codes this process holds
        self._inflight: dict[str, asyncio.Future[Target | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # After a failed Redis read, lookups go straight to ClickHouse until then (a hung
        # Redis would otherwise cost every lookup its timeout).
        self._redis_down_until = 0.0

    async def start(self) -> None:
        if self.codes is not None:
            await self.codes.start()

    async def stop(self) -> None:
        if self.codes is not None:
            await self.codes.stop()
        await self._probe.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def fresh(self, code: str) -> Target | Literal[False]:
        """The cached link while it is fresh; False when ``get`` must be awaited. Saves a
        coroutine per click on the hot path."""
        entry = self._entries.get(code)
        if entry is not None and time.monotonic() < entry.expires:
            return entry.target
        return False

    async def get(self, code: str) -> Target | None:
        entry = self._entries.get(code)
        if entry is None and self.codes is not None and not self.codes.may_exist(code):
            return await self._unlisted(code)
        if entry is not None:
            now = time.monotonic()
            if now < entry.expires:
                return entry.target
            if now < entry.expires + self._grace:
                if not entry.refreshing:
                    entry.refreshing = True
                    task = asyncio.create_task(self._refresh(code, entry))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                return entry.target
        try:
            return await self._load_once(code)
        except StorageUnavailable:
            if entry is not None:
                # Stale is fine while Redis is down; ask again in a second, not on every click.
                entry.expires = time.monotonic() + _RETRY_SECONDS
                return entry.target
            raise

    def probe(self, code: str, reply: Reply) -> bool:
        """For a code neither cached nor in the code set, while Redis is up: ask Redis for its
        record in the next batched read, ``reply`` called with what it said (settle it with
        ``probed``), and True. False, asking nothing, when ``get`` must decide (cached, maybe
        listed, no set yet, or Redis down)."""
        codes = self.codes
        if codes is None or code in self._entries or codes.may_exist(code):
            return False
        if time.monotonic() < self._redis_down_until:
            return False
        self._probe.ask(keys.link(code), reply)
        return True

    def probed(self, code: str, said: bytes | BaseException | None) -> bool | None:
        """What a probe's reply means: True when no link has the code, False for a link created
        since the set's last top-up (added to the set), None when Redis failed."""
        if isinstance(said, BaseException):
            self._redis_down_until = time.monotonic() + _RETRY_SECONDS
            return None
        if said is None:
            return True
        assert self.codes is not None
        self.codes.add(code)
        return False

    async def _unlisted(self, code: str) -> Target | None:
        """A code the code set lacks: unknown, or created since the set's last top-up, in
        which case Redis has it (the registry writes it there before answering)."""
        assert self.codes is not None
        if time.monotonic() >= self._redis_down_until:
            said: bytes | BaseException | None
            try:
                said = await self._probe.get(keys.link(code))
            except (RedisError, OSError) as exc:
                said = exc
            absent = self.probed(code, said)
            if absent is not None:
                # No entry kept for an unknown code: a random flood would only churn the cache.
                return None if absent else await self._load_once(code)
        # Redis cannot say: the set answers alone, topped up from ClickHouse first.
        await self.codes.top_up_now()
        return await self._load_once(code) if self.codes.may_exist(code) else None

    async def _refresh(self, code: str, entry: _Entry) -> None:
        try:
            await self._load_once(code)
        except Exception as exc:
            # Keep serving what we have; try again in a second.
            entry.expires = time.monotonic() + _RETRY_SECONDS
            log.debug("refreshing link %s failed: %s", code, exc)
        finally:
            entry.refreshing = False

    async def _load_once(self, code: str) -> Target | None:
        """Load a code; concurrent misses of one code share a single read."""
        fut = self._inflight.get(code)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[code] = fut
        try:
            target = await self._load(code)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            fut.set_result(target)
            return target
        finally:
            del self._inflight[code]

    async def _load(self, code: str) -> Target | None:
        record = await self._read(code)
        if record is None:
            # No negative entry: it would outlive the link's creation (a link must redirect at
            # once); unknown codes are made cheap by the code set instead.
            self._entries.pop(code, None)
            return None
        target = Target(record)
        if len(self._entries) >= MAX_ENTRIES:
            for old in list(itertools.islice(self._entries, MAX_ENTRIES // 10)):
                del self._entries[old]
        self._entries[code] = _Entry(target, time.monotonic() + self._ttl)
        return target

    async def _read(self, code: str) -> LinkRecord | None:
        key = keys.link(code)
        try:
            if time.monotonic() < self._redis_down_until:
                raise ConnectionError("Redis failed a moment ago")
            raw = await self._redis.get(key)
        except (RedisError, OSError) as exc:
            self._redis_down_until = max(self._redis_down_until, time.monotonic() + _RETRY_SECONDS)
            return await self._stored(code, exc)
        if raw is not None:
            try:
                return LinkRecord.decode(raw)
            except (ValueError, TypeError) as exc:
                log.error("link record of %s in Redis is malformed (%s); rebuilding it", code, exc)
        if self._registry is None:
            return None
        if self.codes is not None and self.codes.loaded and not self.codes.may_exist(code):
            return None  # in neither Redis nor ClickHouse (as of the set's last top-up)
        record = await self._registry.link_by_code(code)
        if record is not None:
            try:
                await self._redis.set(key, record.encode(), nx=True)
            except (RedisError, OSError) as exc:
                log.warning("could not write link %s back to Redis: %s", code, exc)
        return record

    async def _stored(self, code: str, redis_error: BaseException) -> LinkRecord | None:
        """Redis is unreachable: the link from ClickHouse, the system of record."""
        if self._registry is None:
            raise StorageUnavailable(
                f"Redis is unreachable, so link {code!r} cannot be looked up: {redis_error}"
            ) from redis_error
        try:
            return await self._registry.stored_link(code)
        except Exception as exc:
            raise StorageUnavailable(
                f"Neither Redis ({redis_error}) nor ClickHouse ({exc}) answers, so link {code!r} cannot be looked up."
            ) from exc
