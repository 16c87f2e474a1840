-- Conversions: one order per (brand_id, order_id); every status change is a new
-- row with a higher version. Read with FINAL (exact before merges). Money in the
-- brand currency, the original amount and currency and the rate used beside it.
-- Never expired.
CREATE TABLE IF NOT EXISTS conversions
(
    brand_id                  LowCardinality(String),
    order_id                  String,
    version                   UInt64,
    conversion_id             String,
    store_id                  String,
    status                    LowCardinality(String),
    currency                  LowCardinality(String),
    amount                    Decimal(18, 4),
    refunded_amount           Decimal(18, 4),
    original_currency         LowCardinality(String),
    original_amount           Decimal(18, 4),
    original_refunded_amount  Decimal(18, 4),
    fx_rate                   Decimal(18, 8),
    commission                Decimal(18, 4),
    attributed                UInt8,
    attribution               LowCardinality(String),
    click_id                  String,
    link_id                   UInt64,
    link_code                 String,
    campaign_id               String,
    influencer_id             String,
    coupon_code               String,
    occurred_at               DateTime64(3, 'UTC'),
    created_at                DateTime64(3, 'UTC'),
    updated_at                DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (brand_id, order_id)
SETTINGS non_replicated_deduplication_window = 10000
