-- The ledger's rows by influencer, in page order within each (GET /api/v1/conversions?influencer_id=),
-- so an influencer's page reads its own granules too. A version lands under its own influencer:
-- after a re-attribution the older versions stay under the first one, so a page keeps a row only
-- if conversion_moves (0080) has no later version of it under another influencer (tracker.money.ledger).
-- Read with FINAL.
CREATE TABLE IF NOT EXISTS conversion_ledger_influencer
(
    brand_id           LowCardinality(String),
    influencer_id      String,
    occurred_at        DateTime64(3, 'UTC'),
    conversion_id      String,
    order_id           String,
    version            UInt64,
    status             LowCardinality(String),
    attributed         UInt8,
    attribution        LowCardinality(String),
    link_code          String,
    campaign_id        String,
    store_id           String,
    currency           LowCardinality(String),
    amount             Decimal(18, 4),
    refunded_amount    Decimal(18, 4),
    original_amount    Decimal(18, 4),
    original_currency  LowCardinality(String),
    commission         Decimal(18, 4),
    hold_days          UInt16,
    review             UInt8,
    reason             String,
    updated_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (brand_id, influencer_id, occurred_at, conversion_id)
SETTINGS index_granularity = 512, min_compress_block_size = 8192, max_compress_block_size = 8192
