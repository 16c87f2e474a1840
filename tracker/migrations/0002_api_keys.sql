-- Brand API keys, stored as sha256 hex of the key; the key itself is shown once.
CREATE TABLE IF NOT EXISTS api_keys
(
    key_hash    String,
    brand_id    String,
    prefix      String,
    revoked     UInt8 DEFAULT 0,
    created_at  DateTime64(3, 'UTC'),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key_hash
