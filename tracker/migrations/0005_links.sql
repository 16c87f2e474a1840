-- Tracked links. `id` comes from a sequence (hashids encodes it into `code`);
-- codes are global and never reused.
CREATE TABLE IF NOT EXISTS links
(
    brand_id         String,
    id               UInt64,
    code             String,
    campaign_id      String,
    influencer_id    String,
    destination_url  String,
    coupon_code      String,
    disabled         UInt8 DEFAULT 0,
    expires_at       Nullable(DateTime64(3, 'UTC')),
    created_at       DateTime64(3, 'UTC'),
    updated_at       DateTime64(3, 'UTC'),
    version          UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (brand_id, id)
