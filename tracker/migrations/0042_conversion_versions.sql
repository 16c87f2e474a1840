-- Every version of every conversion, kept after conversions' merges fold them: the
-- ledger's history and the statements' source. recorded_at is when the version reached
-- ClickHouse (statements order entries by it). A re-inserted version (an ingest retry) is
-- a second row with the same (order_id, version): readers group by it.
CREATE TABLE IF NOT EXISTS conversion_versions
(
    brand_id         LowCardinality(String),
    order_id         String,
    version          UInt64,
    conversion_id    String,
    status           LowCardinality(String),
    currency         LowCardinality(String),
    amount           Decimal(18, 4),
    refunded_amount  Decimal(18, 4),
    commission       Decimal(18, 4),
    attribution      LowCardinality(String),
    link_code        String,
    campaign_id      String,
    influencer_id    String,
    review           UInt8,
    change           String,
    occurred_at      DateTime64(3, 'UTC'),
    updated_at       DateTime64(3, 'UTC'),
    recorded_at      DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (brand_id, order_id, version)
