"""The redirect hot path, ``GET /{code}``: a raw ASGI handler in front of the Starlette app.

Every click goes through here, so it skips Starlette's middleware, routing and
request objects: ``TrackerStarlette`` hands every path that
``codes.is_redirect_path`` accepts (one segment that no route owns: ``/healthz``,
``/dashboard``, ``/api/...`` always reach their routes) straight to ``Redirector``.

Per click: shape check of the code (no storage access for garbage), link from
the in-process cache (``linkcache``), client IP -> country and visitor hash
(``visitor``; the IP is then dropped), a click id (``clickid``), the Location
header, and the click event awaited through the group commit (``clicklog``).
No ClickHouse, no user-agent parsing (ingest enriches), one Redis round trip
shared with every concurrent click.

Unknown codes (``answers``: 404, or 429 past a per-address limit) are answered before
any of that: a code is looked up before the limiter is asked, so a link always
redirects, also for an address behind a NAT that has sent many unknown codes. The
lookup of an unknown code is cheap (``codeset``: no storage read, one batched Redis
read), so the limiter need not stand in front of it. Under ``tracker serve`` the HTTP
protocol asks ``Redirector.answer_early`` before it starts an ASGI task: an unknown code
is then answered in one write from the protocol, without the task, the ASGI messages or
this handler (a flood of unknown codes costs real clicks that much less); a code that
may be a link goes on to ``handle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import re
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from json.encoder import encode_basestring as _json_string  # C-accelerated, ensure_ascii=False

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from tracker.api import fast
from tracker.api.early import Early, EarlyHook, Later
from tracker.api.endpoints import Operation, Unrouted
from tracker.api.fast import FastRoutes
from tracker.api.proxies import TrustedProxies, client_ip
from tracker.core.clickid import ClickIds
from tracker.core.codes import RESERVED, is_redirect_path
from tracker.core.errors import StorageUnavailable
from tracker.core.events import CLICK_VERSION, HINT_HEAD, HINT_NONE, HINT_PREFETCH, UTM_KEYS
from tracker.core.text import REQUEST_ID as REQUEST_ID_PATTERN
from tracker.core.timeutil import DAY_MS
from tracker.ops.logs import REQUEST_ID
from tracker.ops.metrics import REDIRECT_SECONDS, REDIRECTS
from tracker.redirect import answers
from tracker.redirect.clicklog import ClickLog
from tracker.redirect.linkcache import LinkCache, LinkSource, Target, parse_query, query_value
from tracker.redirect.visitor import Countries, VisitorHasher, normalize_country
from tracker.services import Services
from tracker.settings import Settings
from tracker.storage import redis_client

# The cheap shape check (no storage access for garbage). 3, not 4: the registry accepts
# vanity codes of 3 characters (``codes.VANITY``).
_CODE = re.compile(r"[A-Za-z0-9_-]{3,64}")

MAX_USER_AGENT = 512
MAX_REFERER = 1024
MAX_UTM = 256

_NO_STORE = (b"cache-control", b"no-store")
_EMPTY = (b"content-length", b"0")
_BODY: Message = {"type": "http.response.body", "body": b""}
_UTM_INDEX = {k: i for i, k in enumerate(UTM_KEYS)}
_NO_UTM = ',"","","","",""'
_PURPOSE_HEADERS = (b"sec-purpose", b"purpose", b"x-purpose", b"x-moz")
# A fallback URL goes into a Location header only as printable ASCII (the registry checked it).
_SAFE_LOCATION = re.compile(r"https?://[\x21-\x7e]+")
# (brand id, campaign id) -> the campaign's fallback URL, "" for none (never raises).
FallbackSource = Callable[[str, str], Awaitable[str]]

log = logging.getLogger("tracker.redirect.handler")

_R302 = REDIRECTS.labels("302")
METRICS_FLUSH_SECONDS = 0.2


def encode_click(
    target: Target, click_id: str, ts_ms: int, visitor_hash: int, country: str, user_agent: str, referer: str,
    utm: list[str] | None, hint: str,
) -> bytes:
    """Byte for byte ``ClickEvent(...).encode()`` of a redirect's click, at a third of its cost:
    the link's fields come encoded from the Target; the click id (base64url) and the
    hint (one of the ``HINT_*`` words) need no escaping; no utm values is one constant."""
    s = _json_string
    utm_json = (
        _NO_UTM if utm is None else f",{s(utm[0])},{s(utm[1])},{s(utm[2])},{s(utm[3])},{s(utm[4])}"
    )
    return (
        f'[{CLICK_VERSION},"{click_id}",{ts_ms}{target.event_link}{visitor_hash},{s(country)},'
        f'{s(user_agent)},{s(referer)}{utm_json},"{hint}"]'
    ).encode()


class RedirectStats:
    """302 count and latency histogram summed in plain Python and added to the Prometheus series
    every ``METRICS_FLUSH_SECONDS``: with several workers (multiprocess mode) one ``observe``
    plus one ``inc`` cost more than the rest of a redirect's own work.

    Histogram has no public bulk update, so the flush adds to its bucket and sum values
    (``_buckets``, ``_sum``); when a prometheus-client release lacks them, every latency is
    observed one by one at flush time instead (same series, same numbers).
    """

    def __init__(self) -> None:
        self._bounds: list[float] = list(getattr(REDIRECT_SECONDS, "_upper_bounds", ()))
        self._bulk = bool(self._bounds) and hasattr(REDIRECT_SECONDS, "_buckets") and hasattr(REDIRECT_SECONDS, "_sum")
        self._counts = [0] * len(self._bounds)
        self._values: list[float] = []
        self._sum = 0.0
        self.served = 0

    def record(self, seconds: float) -> None:
        self.served += 1
        if self._bulk:
            self._counts[bisect_left(self._bounds, seconds)] += 1
            self._sum += seconds
        else:
            self._values.append(seconds)

    def flush(self) -> None:
        served, self.served = self.served, 0
        if served:
            _R302.inc(served)
        if self._bulk:
            counts, self._counts = self._counts, [0] * len(self._bounds)
            total, self._sum = self._sum, 0.0
            buckets = REDIRECT_SECONDS._buckets
            for i, n in enumerate(counts):
                if n:
                    buckets[i].inc(n)
            if served:
                REDIRECT_SECONDS._sum.inc(total)
        else:
            values, self._values = self._values, []
            for v in values:
                REDIRECT_SECONDS.observe(v)


class Redirector:
    """The parts of the hot path, started and stopped with the app (component ``redirect``)."""

    def __init__(
        self, settings: Settings, registry: LinkSource | None, fallback: FallbackSource | None = None
    ) -> None:
        assert settings.secret_key, "checked at start-up (tracker.startup.check_settings)"
        # Lookups get one retry (a connection left over from before a Redis restart fails
        # once); short timeouts so a hung Redis turns into stale answers quickly.
        self.redis = redis_client.connect_async(
            settings, socket_connect_timeout=0.5, socket_timeout=1.0, retry=Retry(NoBackoff(), 1)
        )
        self.links = LinkCache(self.redis, settings.link_cache_seconds, registry=registry)
        self._cached = self.links.entries  # code -> cached link, read by ``answer_early`` per request
        self.fallback = fallback
        self.visitors = VisitorHasher(self.redis)
        self.clicklog = ClickLog(settings)
        self.click_ids = ClickIds(settings.secret_key)
        self.trusted = TrustedProxies(settings.trusted_proxies)
        self.country_header = settings.country_header.lower().encode() if settings.country_header else None
        self.limiter = answers.NotFoundLimiter()
        self.countries: Countries | None = None
        self.stats = RedirectStats()
        self._stats_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.countries = Countries()
        await self.visitors.start()
        await self.clicklog.start()
        await self.links.start()
        self._stats_task = asyncio.create_task(self._flush_stats(), name="redirect-stats")
        # Everything loaded so far (the app, chDB, geoip data) lives for the whole process: keep
        # it out of the collector's full passes, which otherwise stall every in-flight redirect
        # for tens of milliseconds (they showed up as the p99 under load).
        gc.freeze()

    async def stop(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
        await self.links.stop()
        await self.clicklog.stop()
        await self.visitors.stop()
        await self.redis.aclose()
        self.stats.flush()

    async def _flush_stats(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_SECONDS)
            self.stats.flush()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            await answers.send_answer(send, answers.error(
                405, "method_not_allowed", f"Method {method} is not allowed on a short link.",
                ((b"allow", b"GET, HEAD"),),
            ))
            return
        code = scope["path"][1:]
        client = scope.get("client")
        peer = client[0] if client else ""
        user_agent = referer = forwarded = country = ""
        hint = HINT_HEAD if method == "HEAD" else HINT_NONE
        country_header = self.country_header
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = value[:MAX_USER_AGENT].decode("utf-8", "replace")
            elif name == b"referer":
                referer = value[:MAX_REFERER].decode("utf-8", "replace")
            elif name == b"x-forwarded-for":
                # Several header lines are one list (RFC 9110 §5.3); a proxy may add its own line.
                forwarded = f"{forwarded},{value.decode('latin-1')}" if forwarded else value.decode("latin-1")
            elif name == country_header:
                country = value.decode("latin-1")
            elif name in _PURPOSE_HEADERS and not hint:
                low = value.lower()
                if b"prefetch" in low or b"preview" in low:
                    hint = HINT_PREFETCH
        ip = client_ip(peer, forwarded, self.trusted) if forwarded else peer

        if _CODE.fullmatch(code) is None:
            await self._not_found(scope, send, ip, f"No link has the code {code[:64]!r}.")
            return
        links = self.links
        cached = links.fresh(code)
        try:
            target = await links.get(code) if cached is False else cached
        except StorageUnavailable:
            REDIRECTS.labels("503").inc()
            await answers.send_answer(send, answers.error(
                503, "storage_unavailable", f"Link {code!r} cannot be looked up right now; try again shortly.",
                ((b"retry-after", b"1"),),
            ))
            return
        if target is None:
            await self._not_found(scope, send, ip, f"No link has the code {code!r}.")
            return
        record = target.record
        now_ms = time.time_ns() // 1_000_000
        if record.disabled or (record.expires_at_ms is not None and now_ms >= record.expires_at_ms):
            await self._gone(scope, send, target)
            return

        if country_header is not None and country and peer in self.trusted:
            country = normalize_country(country)
        else:
            country = self.countries.lookup(ip) if self.countries is not None else ""
        day = now_ms // DAY_MS
        visitor_hash = self.visitors.hash_now(day, ip, user_agent)
        if visitor_hash is None:
            visitor_hash = await self.visitors.hash(day, ip, user_agent)
        click_id = self.click_ids.mint(record.id, now_ms)
        query = parse_query(scope["query_string"])
        utm: list[str] | None = None
        for name, piece in query:
            i = _UTM_INDEX.get(name)
            if i is not None:
                if utm is None:
                    utm = ["", "", "", "", ""]
                if not utm[i]:
                    utm[i] = query_value(piece)[:MAX_UTM]
        location = target.location(click_id, query)
        await self.clicklog.log_encoded(
            encode_click(target, click_id, now_ms, visitor_hash, country, user_agent, referer, utm, hint)
        )
        await send(
            {"type": "http.response.start", "status": 302, "headers": [(b"location", location), _NO_STORE, _EMPTY]}
        )
        await send(_BODY)
        self.stats.record(time.perf_counter() - started)

    def answer_early(self, scope: Scope, later: Later) -> answers.Answer | Early | None:
        """The answer to a request for a code that no link has, before any ASGI task exists
        (``api.connections``): at once for a malformed code, through ``later`` after the
        batched Redis probe for a well-formed one the code set lacks. None (now or later):
        ``handle`` answers (a cached link, a code that may be a link, Redis down, not GET or HEAD)."""
        path = scope["path"]
        code = path[1:]
        if code in self._cached:
            return None  # a link this process holds: the click is ``handle``'s (checked first: it is most requests)
        method = scope["method"]
        if not is_redirect_path(path) or (method != "GET" and method != "HEAD"):
            return None
        if _CODE.fullmatch(code) is None:
            return answers.not_found(
                self.limiter, scope["headers"], self._client_ip(scope), f"No link has the code {code[:64]!r}."
            )
        if self.links.probe(code, functools.partial(self._probed, scope, code, later)):
            return Early.LATER
        return None

    def _probed(self, scope: Scope, code: str, later: Later, said: bytes | BaseException | None) -> None:
        if self.links.probed(code, said):
            later(answers.not_found(
                self.limiter, scope["headers"], self._client_ip(scope), f"No link has the code {code!r}."
            ))
        else:
            later(None)

    def _client_ip(self, scope: Scope) -> str:
        """The client address, as ``handle`` reads it in its one pass over the headers."""
        client = scope.get("client")
        forwarded = ",".join(value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for")
        return client_ip(client[0] if client else "", forwarded, self.trusted)

    async def _not_found(self, scope: Scope, send: Send, ip: str, message: str) -> None:
        await answers.send_answer(send, answers.not_found(self.limiter, scope["headers"], ip, message))

    async def _gone(self, scope: Scope, send: Send, target: Target) -> None:
        """A disabled or expired link: the campaign's fallback URL when set (no click is logged),
        else 410 (an HTML page for a browser)."""
        record = target.record
        fallback = ""
        if self.fallback is not None:
            fallback = await self.fallback(record.brand_id, record.campaign_id)
        if fallback and _SAFE_LOCATION.fullmatch(fallback):
            REDIRECTS.labels("fallback").inc()
            await send({"type": "http.response.start", "status": 302,
                        "headers": [(b"location", fallback.encode("ascii")), _NO_STORE, _EMPTY]})
            await send(_BODY)
            return
        REDIRECTS.labels("410").inc()
        why = "disabled" if record.disabled else "expired"
        await answers.send_answer(
            send, answers.for_follower(scope["headers"], 410, "gone", f"Link {record.code!r} is {why}.")
        )


# GET /{code} for the OpenAPI document: answered before the router, so described here.
_CODE_PATTERN = "^(?!(?:{})$){}$".format(
    "|".join(sorted(name for name in RESERVED if _CODE.fullmatch(name))), _CODE.pattern
)
REDIRECT = Unrouted(
    "/{code}",
    "GET",
    Operation(
        "Follow a short link: 302 to the destination with the click id appended (HEAD too).",
        "redirect",
        description="Location is the link's destination with its own query, the visitor's query parameters "
        "(any; the visitor wins a clash) and <click_id_param>=<click id>.",
        answers={302: None},
        headers={302: {"Location": {"type": "string", "format": "uri"}}},
        errors=(404, 410, 429, 503),
        path_params={"code": {"type": "string", "pattern": _CODE_PATTERN}},
        operation_id="redirect",
    ),
)


class TrackerStarlette(Starlette):
    """The app: a Starlette whose ``__call__`` hands ``/{code}`` straight to the redirect.

    A redirect skips the middleware stack (server-error and request-id middlewares,
    coroutine frames and a wrapped ``send``): a few microseconds,
    which is a tenth of a redirect's own cost. What the stack would add is done
    here: an unexpected error is logged and answered with the JSON 500 of every
    other route, the log line carrying a proxy's ``X-Request-Id`` (which, as
    before, is not echoed on redirects). Before the lifespan has started the
    redirect, the request takes the normal stack (and finds no route).
    """

    unrouted = (REDIRECT,)
    # The API routes answered before the middleware too (``tracker.api.fast``: the postbacks'),
    # set by ``tracker.app``; None: every other request takes the normal stack.
    fast_routes: FastRoutes | None = None
    # Asked by the HTTP protocol before it starts an ASGI task (``api.connections``): the
    # redirect's ``Redirector.answer_early`` while it runs (set and unset by the lifespan).
    early_answer: EarlyHook | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if is_redirect_path(path):
                svc: Services | None = getattr(self.state, "services", None)
                if svc is not None:
                    scope["app"] = self
                    try:
                        await svc.redirect.handle(scope, receive, send)
                    except Exception:
                        _note_request_id(scope)  # what the request-id middleware gives log lines
                        log.exception("redirect of %s failed", path[:80])
                        with contextlib.suppress(Exception):  # the response may be under way already
                            await answers.send_answer(send, answers.error(
                                500, "internal_error", "The server failed to handle the request; it was logged."
                            ))
                    return
            elif (
                self.fast_routes is not None
                and (found := self.fast_routes(scope["method"], path)) is not None
                and getattr(self.state, "services", None) is not None
            ):
                scope["app"] = self
                scope["path_params"] = found[1]
                await fast.serve(found[0], scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _note_request_id(scope: Scope) -> None:
    """Put a proxy's ``X-Request-Id`` on this request's log lines (the request's own task context)."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if REQUEST_ID_PATTERN.fullmatch(text):
                REQUEST_ID.set(text)
            return
