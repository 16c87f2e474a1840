-- Outbound webhook endpoints of a brand. The signing secret is derived from
-- secret_nonce under the server secret (never stored); a change is a new row
-- version; a deleted endpoint keeps a row with deleted = 1.
CREATE TABLE IF NOT EXISTS webhook_endpoints
(
    brand_id         String,
    id               String,
    url              String,
    events           Array(LowCardinality(String)),
    enabled          UInt8,
    disabled_reason  String,
    secret_nonce     String,
    deleted          UInt8 DEFAULT 0,
    created_at       DateTime64(3, 'UTC'),
    updated_at       DateTime64(3, 'UTC'),
    version          UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (brand_id, id)
