-- Stores that send postbacks. The signing secret is derived from the server
-- secret and `secret_nonce` (HMAC needs the key, so it cannot be a one-way hash);
-- the GET postback token is stored as sha256 hex.
CREATE TABLE IF NOT EXISTS stores
(
    brand_id      String,
    id            String,
    name          String,
    secret_nonce  String,
    token_hash    String,
    allowed_ips   Array(String),
    created_at    DateTime64(3, 'UTC'),
    version       UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (brand_id, id)
