"""Every Redis key and stream name, under one prefix (arq's ``constants.py``).

Leaf module: imports nothing of the project.
"""

from __future__ import annotations

PREFIX = "trk:"

# Streams and the consumer group that ingest workers share.
CLICK_STREAM = PREFIX + "stream:clicks"
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
    return f"{PREFIX}conv:{brand_id}:{order_id}"


def visitor_salt(day: str) -> str:
    """Random salt of one UTC day (YYYYMMDD) for visitor hashes; expires after two days."""
    return f"{PREFIX}salt:{day}"


# Prefix of the rate-limit counters the ``limits`` library keeps
# (``trk:rl:<namespace>/<subject>/<amount>/<multiples>/<granularity>``).
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
WEBHOOK_STREAM = PREFIX + "stream:webhooks"
WEBHOOK_GROUP = "webhooks"
# Member "<endpoint id>|<object id>" -> epoch ms the head of that queue is due.
WEBHOOK_DUE = PREFIX + "wh:due"


def webhook_endpoints(brand_id: str) -> str:
    """JSON list of a brand's webhook endpoints (cache of ``webhook_endpoints FINAL``)."""
    return f"{PREFIX}wh:brand:{brand_id}"


def webhook_endpoint(endpoint_id: str) -> str:
    """JSON record of one endpoint (cache), read by the sender."""
    return f"{PREFIX}wh:ep:{endpoint_id}"


def webhook_health(endpoint_id: str) -> str:
    """Hash: failing_since, last_success_at, last_error of one endpoint."""
    return f"{PREFIX}wh:health:{endpoint_id}"


def webhook_delivery(delivery_id: str) -> str:
    """Hash: one delivery (event body, status, attempts, last error, response code)."""
    return f"{PREFIX}wh:d:{delivery_id}"


def webhook_log(endpoint_id: str) -> str:
    """Sorted set delivery id -> created ms: an endpoint's delivery log, newest last."""
    return f"{PREFIX}wh:log:{endpoint_id}"


def webhook_queue(endpoint_id: str, object_id: str) -> str:
    """List of delivery ids of one object for one endpoint, oldest first (order per object)."""
    return f"{PREFIX}wh:q:{endpoint_id}:{object_id}"


def webhook_queues(endpoint_id: str) -> str:
    """Set of the object ids whose queue for this endpoint is not empty."""
    return f"{PREFIX}wh:queues:{endpoint_id}"
# --- conversions: what Redis knows of a brand's orders and customers --------------------------------
# Every key of one order's commit names the brand, so a hash tag by brand can put them in one slot.


def order_set(brand_id: str) -> str:
    """Hash describing the brand's known-orders filter: generations, fill, completeness (``conversions.orderset``)."""
    return f"{PREFIX}orders:{brand_id}"


def order_set_generation(brand_id: str, generation: int) -> str:
    """One generation of the brand's known-orders Bloom filter (a bitfield)."""
    return f"{PREFIX}orders:{brand_id}:g{generation}"


def held_refunds(brand_id: str, order_id: str) -> str:
    """Platform refunds of an order not recorded yet, kept until the order arrives (JSON)."""
    return f"{PREFIX}held:{brand_id}:{order_id}"


def delivery(brand_id: str, store_id: str, delivery_id: str) -> str:
    """A platform webhook delivery already applied (Shopify webhook id, WooCommerce delivery id, Stripe event id)."""
    return f"{PREFIX}delivery:{brand_id}:{store_id}:{delivery_id}"


def customer_shard(brand_id: str, shard: str) -> str:
    """Hash customer hash -> "link_id:first_ms" of the customer's first attributed order (one of 4096 shards)."""
    return f"{PREFIX}cust:{brand_id}:{shard}"


def order_set_lock(brand_id: str) -> str:
    """Held by the one process rebuilding a brand's known-orders filter from ClickHouse."""
    return f"{PREFIX}lock:orders:{brand_id}"
