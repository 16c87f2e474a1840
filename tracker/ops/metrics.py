"""Prometheus series of every stage, defined in one place.

Modules import the objects they update; ``/metrics`` renders them. With several
HTTP workers, ``PROMETHEUS_MULTIPROC_DIR`` makes prometheus-client aggregate
across processes (``tracker serve --workers N`` sets it up).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Redirect hot path.
REDIRECTS = Counter("tracker_redirects_total", "Redirect answers by status code.", ["status"])
REDIRECT_SECONDS = Histogram(
    "tracker_redirect_seconds",
    "Redirect latency, request in to response start (includes the group-commit wait).",
    buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.015, 0.03, 0.06, 0.12, 0.25, 0.5, 1.0),
)
CLICKS_ENQUEUED = Counter("tracker_clicks_enqueued_total", "Clicks written to the Redis click stream.")
CLICKS_SPOOLED = Counter("tracker_clicks_spooled_total", "Clicks written to the local spool (Redis down).")
CLICKS_REPLAYED = Counter("tracker_clicks_replayed_total", "Spooled clicks replayed into the stream.")
CLICKS_DROPPED = Counter(
    "tracker_clicks_dropped_total",
    "Clicks not recorded (their followers were still redirected): Redis down and the spool at its size cap "
    "(TRACKER_SPOOL_MAX_MB) or failing.",
)
SPOOL_BYTES = Gauge(
    "tracker_spool_bytes", "Size of the local click spool (clicks waiting for Redis).", multiprocess_mode="max"
)
GROUP_COMMIT_SIZE = Histogram(
    "tracker_group_commit_size",
    "Clicks per Redis pipeline (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)

# HTTP connections (tracker.api.connections).
HTTP_CONNECTIONS = Gauge("tracker_http_connections", "Open HTTP connections.", multiprocess_mode="livesum")
HTTP_CONNECTIONS_CLOSED = Counter(
    "tracker_http_connections_closed_total",
    "Connections the server closed: header_timeout (headers not complete in time), headers_too_large, "
    "limit_waiting (closed to make room: no request in progress), limit_new (over the limit, none idle).",
    ["reason"],
)

# Embedded mode.
EMBEDDED_REDIS_RESTARTS = Counter(
    "tracker_embedded_redis_restarts_total", "Times the embedded Valkey server exited and was started again."
)

# Postbacks.
POSTBACKS = Counter("tracker_postbacks_total", "Conversion postbacks by outcome.", ["outcome"])

# Ingest.
INGEST_ROWS = Counter("tracker_ingest_rows_total", "Rows inserted into ClickHouse.", ["stream"])
INGEST_BATCHES = Counter("tracker_ingest_batches_total", "Batches inserted into ClickHouse.", ["stream"])
INGEST_RETRIES = Counter("tracker_ingest_retries_total", "Insert attempts that failed and were retried.", ["stream"])
INGEST_REPAIRED = Counter(
    "tracker_ingest_repaired_rows_total",
    "Rows inserted again after a crash or a retry: a token outlived an uncommitted part, "
    "or a view's table lacked rows its table kept.",
    ["stream"],
)
INGEST_DEAD_LETTERS = Counter(
    "tracker_ingest_dead_letters_total", "Entries moved to the dead-letter stream.", ["stream"]
)
# Gauges are set at scrape time by whichever worker answers /metrics: the most recent
# value is the true one, a max over workers would keep a stale peak.
STREAM_LENGTH = Gauge(
    "tracker_stream_length", "Entries in a stream.", ["stream"], multiprocess_mode="mostrecent"
)
STREAM_LAG = Gauge(
    "tracker_stream_lag",
    "Entries not yet delivered to the ingest group.",
    ["stream"],
    multiprocess_mode="mostrecent",
)
STREAM_PENDING = Gauge(
    "tracker_stream_pending",
    "Entries read by an ingest worker and not yet in ClickHouse (held in ranges).",
    ["stream"],
    multiprocess_mode="mostrecent",
)
STREAM_OLDEST_PENDING_SECONDS = Gauge(
    "tracker_stream_oldest_pending_seconds",
    "Age of the oldest entry read by an ingest worker and not yet in ClickHouse.",
    ["stream"],
    multiprocess_mode="mostrecent",
)


def set_stream_gauges(stream: str, st: dict[str, float]) -> None:
    """The four gauges of one stream from ``delivery.gauges``' answer (HTTP scrape and ingest alike)."""
    STREAM_LENGTH.labels(stream).set(st["length"])
    STREAM_LAG.labels(stream).set(st["lag"])
    STREAM_PENDING.labels(stream).set(st["pending"])
    STREAM_OLDEST_PENDING_SECONDS.labels(stream).set(st["oldest_pending_seconds"])

# Platform webhooks (Shopify, WooCommerce, Stripe) by outcome: accepted, duplicate, redelivered, held, ignored,
# refused (answered 2xx, kept for the brand: see GET /api/v1/stores/{id}/events), unauthorized, invalid, unavailable.
WEBHOOKS = Counter("tracker_webhooks_total", "Platform webhooks by platform and outcome.", ["platform", "outcome"])
