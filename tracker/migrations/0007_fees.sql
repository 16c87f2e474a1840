-- Flat fees paid to influencers, converted to the brand currency when recorded.
CREATE TABLE IF NOT EXISTS fees
(
    brand_id           String,
    id                 String,
    campaign_id        String,
    influencer_id      String,
    amount             Decimal(18, 4),
    currency           LowCardinality(String),
    original_amount    Decimal(18, 4),
    original_currency  LowCardinality(String),
    fx_rate            Decimal(18, 8),
    date               Date,
    note               String,
    created_at         DateTime64(3, 'UTC'),
    version            UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (brand_id, id)
