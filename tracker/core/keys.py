"""Every Redis key and stream name, under one prefix (arq's ``constants.py``).

Leaf module: imports nothing of the project.
"""

from __future__ import annotations

import zlib

PREFIX = "trk:"

# Streams and the consumer group that ingest workers share.
CLICK_STREAM = PREFIX + "stream:clicks"
# The conversion stream of the plain layout; ``conversion_streams`` lists the current layout's.
CONVERSION_STREAM = PREFIX + "stream:conversions"
DEAD_LETTER_STREAM = PREFIX + "stream:dead"
INGEST_GROUP = "ingest"

# Sequences (seeded from ClickHouse when Redis lost them).
LINK_SEQUENCE = PREFIX + "seq:link"


def click_stream(shard: int, shards: int) -> str:
    """Stream key of one click shard; one shard keeps the plain name."""
    if shards <= 1:
        return CLICK_STREAM
    # The hash tag keeps each shard on one Redis Cluster slot, shards on different slots.
    return f"{PREFIX}{{clicks:{shard}}}:stream"


def click_streams(shards: int) -> list[str]:
    return [click_stream(i, shards) for i in range(max(1, shards))]


def link(code: str) -> str:
    """JSON link record served to the redirect (written through on create/update)."""
    return f"{PREFIX}link:{code}"


def api_key(key_hash: str) -> str:
    """sha256 of a brand API key -> brand id."""
    return f"{PREFIX}apikey:{key_hash}"


def conversion(brand_id: str, order_id: str) -> str:
    """Current state of one order (idempotency and status moves)."""
    return f"{_brand(brand_id)}conv:{brand_id}:{order_id}"


def visitor_salt(day: str) -> str:
    """Random salt of one UTC day (YYYYMMDD) for visitor hashes; expires after two days."""
    return f"{PREFIX}salt:{day}"


# Prefix of the rate-limit counters (``postback_rate``).
RATE_LIMITS = PREFIX + "rl"


def ingest_range(tag: str, start: str) -> str:
    """One range of stream entries held by an ingest worker (``tracker.ingest.delivery``).

    ``tag`` is the stream's Redis Cluster hash tag, so the record shares the stream's slot.
    """
    return f"{PREFIX}ingest:{tag}:range:{start}"


def ingest_ranges(tag: str) -> str:
    """Set of the starts of a stream's open ranges."""
    return f"{PREFIX}ingest:{tag}:ranges"


def ingest_reading(tag: str, consumer: str) -> str:
    """Scratch of one read in flight (the group cursor before it), inside its MULTI."""
    return f"{PREFIX}ingest:{tag}:reading:{consumer}"


def fx_rate(brand_id: str) -> str:
    """Hash currency -> rate (units of brand currency per unit of currency)."""
    return f"{PREFIX}fx:{brand_id}"


def heartbeat(worker: str) -> str:
    return f"{PREFIX}worker:{worker}"


def coupon(brand_id: str, coupon_code: str) -> str:
    """Coupon code (upper-cased) of a brand -> link code."""
    return f"{PREFIX}coupon:{brand_id}:{coupon_code.upper()}"


def campaign(brand_id: str, campaign_id: str) -> str:
    """JSON campaign record (commission rule, window) for postbacks."""
    return f"{PREFIX}campaign:{brand_id}:{campaign_id}"


def store(store_id: str) -> str:
    """JSON store record (brand, secret nonce, token hash, allowed IPs) for postbacks."""
    return f"{PREFIX}store:{store_id}"


def brand(brand_id: str) -> str:
    """JSON brand record (name, currency)."""
    return f"{PREFIX}brand:{brand_id}"


def link_code(link_id: int) -> str:
    """Link id -> custom (vanity) code; generated codes are the hashids of the id."""
    return f"{PREFIX}linkcode:{link_id}"


# Payout webhook events written before their payout's commit and removed once emitted
# (``tracker.money.intents``): a hash, field ``brand|kind|ref``.
PAYOUT_OUTBOX = PREFIX + "payouts:outbox"


def registry_lock(kind: str, ident: str) -> str:
    """Short-lived lock serialising read-modify-write of one registry row (link PATCH)."""
    return f"{PREFIX}lock:{kind}:{ident}"


def key_used(key_id: str) -> str:
    """Epoch ms an API key was last used (written at most once a minute per key and process)."""
    return f"{PREFIX}keyused:{key_id}"


def portal_signin(token_hash: str) -> str:
    """sha256 of a one-time portal sign-in token -> JSON {brand_id, influencer_id}; expires."""
    return f"{PREFIX}portal:signin:{token_hash}"


def app_session(session_hash: str) -> str:
    """sha256 of a brand app session id -> JSON {key_hash, csrf, expires_ms}; expires."""
    return f"{PREFIX}app:session:{session_hash}"


def portal_session(session_hash: str) -> str:
    """sha256 of a portal session id -> JSON {brand_id, influencer_id, expires_ms}; expires."""
    return f"{PREFIX}portal:session:{session_hash}"


# Outbound webhooks (``tracker.webhooks``): the outbox stream of events other than conversions
# (conversions are read from the conversion stream through their own consumer group).
# The outbox scripts build their keys from a prefix: in the tagged layout every webhook key
# carries the hash tag ``{wh}`` (one slot: the outbox is small next to clicks and orders).
WEBHOOK_STREAM = PREFIX + "stream:webhooks"
WEBHOOK_GROUP = "webhooks"
# Member "<endpoint id>|<object id>" -> epoch ms the head of that queue is due.
WEBHOOK_DUE = PREFIX + "wh:due"


def webhook_prefix() -> str:
    """What every webhook key starts with (``WEBHOOK_*`` are the plain layout's names)."""
    return PREFIX + "{wh}:" if _layout["tagged"] else PREFIX


def webhook_stream() -> str:
    return webhook_prefix() + "stream:webhooks"


def webhook_due() -> str:
    return webhook_prefix() + "wh:due"


def webhook_endpoints(brand_id: str) -> str:
    """JSON list of a brand's webhook endpoints (cache of ``webhook_endpoints FINAL``)."""
    return f"{webhook_prefix()}wh:brand:{brand_id}"


def webhook_endpoint(endpoint_id: str) -> str:
    """JSON record of one endpoint (cache), read by the sender."""
    return f"{webhook_prefix()}wh:ep:{endpoint_id}"


def webhook_health(endpoint_id: str) -> str:
    """Hash: failing_since, last_success_at, last_error of one endpoint."""
    return f"{webhook_prefix()}wh:health:{endpoint_id}"


def webhook_delivery(delivery_id: str) -> str:
    """Hash: one delivery (event body, status, attempts, last error, response code)."""
    return f"{webhook_prefix()}wh:d:{delivery_id}"


def webhook_log(endpoint_id: str) -> str:
    """Sorted set delivery id -> created ms: an endpoint's delivery log, newest last."""
    return f"{webhook_prefix()}wh:log:{endpoint_id}"


def webhook_queue(endpoint_id: str, object_id: str) -> str:
    """List of delivery ids of one object for one endpoint, oldest first (order per object)."""
    return f"{webhook_prefix()}wh:q:{endpoint_id}:{object_id}"


def webhook_queues(endpoint_id: str) -> str:
    """Set of the object ids whose queue for this endpoint is not empty."""
    return f"{webhook_prefix()}wh:queues:{endpoint_id}"
# --- conversions: what Redis knows of a brand's orders and customers --------------------------------
# One order's commit (``conversions.orderset.COMMIT``) writes its state, the conversion stream and
# the brand's filter, held refunds, delivery marker and customer shard in one script. On a Redis
# Cluster they must share a slot: with the *tagged* layout every such key of a brand starts with
# its conversion shard's hash tag ``{c:N}`` (N = crc32(brand) mod TRACKER_CONVERSION_SHARDS), and
# shard N's conversion stream carries the same tag. The plain layout (one Redis, one conversion
# shard) keeps the names every release before had, so existing data stays where it is.
#
# The layout is process-wide (a process talks to one Redis deployment) and is set by
# ``tracker.storage.redis_client`` when it opens Redis; it only changes key names.
_layout = {"tagged": False, "shards": 1}


def use_layout(*, cluster: bool, conversion_shards: int) -> None:
    """Tagged brand keys when Redis is a cluster or conversions are sharded; else the plain names."""
    _layout["shards"] = max(1, conversion_shards)
    _layout["tagged"] = cluster or conversion_shards > 1


def tagged() -> bool:
    return bool(_layout["tagged"])


def conversion_shard(brand_id: str) -> int:
    return zlib.crc32(brand_id.encode()) % _layout["shards"]


def _conversion_tag(shard: int) -> str:
    return f"{PREFIX}{{c:{shard}}}:"


def _brand(brand_id: str) -> str:
    """Where a brand's conversion keys start: the prefix, or the prefix and its shard's hash tag."""
    return _conversion_tag(conversion_shard(brand_id)) if _layout["tagged"] else PREFIX


def conversion_streams() -> list[str]:
    """Every conversion stream of the current layout (ingest and the webhook sender read them all)."""
    if not _layout["tagged"]:
        return [CONVERSION_STREAM]
    return [_conversion_tag(i) + "stream:conversions" for i in range(_layout["shards"])]


def conversion_stream(brand_id: str) -> str:
    """The conversion stream a brand's orders go to (in the slot of the brand's order keys)."""
    return _brand(brand_id) + "stream:conversions" if _layout["tagged"] else CONVERSION_STREAM


def is_conversion_stream(stream: str) -> bool:
    tagged_stream = stream.startswith(PREFIX + "{c:") and stream.endswith("}:stream:conversions")
    return stream == CONVERSION_STREAM or tagged_stream


def postback_rate(brand_id: str, store_id: str) -> str:
    """A store's postback counter of the current one-minute window (``conversions.ratelimit``).

    Under ``RATE_LIMITS`` and, in the tagged layout, in the slot of the store's brand: the
    record script counts a postback in the same call that reads and writes the order.
    """
    tag = f"{{c:{conversion_shard(brand_id)}}}:" if _layout["tagged"] else ""
    return f"{RATE_LIMITS}:{tag}postback/{store_id}"


def order_set(brand_id: str) -> str:
    """Hash describing the brand's known-orders filter: generations, fill, completeness (``conversions.orderset``)."""
    return f"{_brand(brand_id)}orders:{brand_id}"


def order_set_generation(brand_id: str, generation: int) -> str:
    """One generation of the brand's known-orders Bloom filter (a bitfield)."""
    return f"{_brand(brand_id)}orders:{brand_id}:g{generation}"


def held_refunds(brand_id: str, order_id: str) -> str:
    """Platform refunds of an order not recorded yet, kept until the order arrives (JSON)."""
    return f"{_brand(brand_id)}held:{brand_id}:{order_id}"


def delivery(brand_id: str, store_id: str, delivery_id: str) -> str:
    """A platform webhook delivery already applied (Shopify webhook id, WooCommerce delivery id, Stripe event id)."""
    return f"{_brand(brand_id)}delivery:{brand_id}:{store_id}:{delivery_id}"


def customer_shard(brand_id: str, shard: str) -> str:
    """Hash customer hash -> "link_id:first_ms" of the customer's first attributed order (one of 4096 shards)."""
    return f"{_brand(brand_id)}cust:{brand_id}:{shard}"


def order_set_lock(brand_id: str) -> str:
    """Held by the one process rebuilding a brand's known-orders filter from ClickHouse."""
    return f"{_brand(brand_id)}lock:orders:{brand_id}"
