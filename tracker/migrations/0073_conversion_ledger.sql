-- The ledger's rows (GET /api/v1/conversions): each conversion's versions, sorted the way pages list
-- them, so a page reads its own granules only (occurred_at and conversion_id never change between
-- versions; version folds them, read with FINAL). A filtered page or one conversion reads rows
-- scattered over the table, and a point read decompresses every block it touches: hence granules
-- of 512 rows and 8 KiB blocks (the default 8,192 rows and 64 KiB to 1 MiB made a page of 100
-- scattered rows read some 700,000). The bloom filters find the granules of a campaign, a store
-- or a conversion id; they serve reads without FINAL (tracker.money.ledger). An influencer's
-- rows have a table of their own, sorted by influencer (0076).
CREATE TABLE IF NOT EXISTS conversion_ledger
(
    brand_id           LowCardinality(String),
    occurred_at        DateTime64(3, 'UTC'),
    conversion_id      String,
    order_id           String,
    version            UInt64,
    status             LowCardinality(String),
    attributed         UInt8,
    attribution        LowCardinality(String),
    link_code          String,
    influencer_id      String,
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
    updated_at         DateTime64(3, 'UTC'),
    INDEX campaign campaign_id TYPE bloom_filter GRANULARITY 1,
    INDEX store store_id TYPE bloom_filter GRANULARITY 1,
    INDEX conversion conversion_id TYPE bloom_filter GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (brand_id, occurred_at, conversion_id)
SETTINGS index_granularity = 512, min_compress_block_size = 8192, max_compress_block_size = 8192
