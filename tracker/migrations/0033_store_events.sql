-- Platform webhook events kept for later: a refund that arrived before its order
-- (kind "held", applied when the order arrives) and an event refused for a business
-- reason (kind "refused": no exchange rate, a status move not allowed), answered 2xx
-- to the platform and kept with its raw body so the brand can see it and re-drive it.
-- A new version of a row (status "redriven") replaces it.
CREATE TABLE IF NOT EXISTS store_events
(
    brand_id     String,
    store_id     String,
    id           String,
    kind         LowCardinality(String),
    platform     LowCardinality(String),
    topic        String,
    delivery_id  String,
    order_id     String,
    code         String,
    message      String,
    detail       String,
    body         String CODEC(ZSTD(3)),
    status       LowCardinality(String),
    received_at  DateTime64(3, 'UTC'),
    updated_at   DateTime64(3, 'UTC'),
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (brand_id, store_id, id)
