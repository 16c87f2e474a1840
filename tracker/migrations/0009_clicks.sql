-- Raw clicks, one row per redirect. The tenant leads the sort key, then the day.
-- click_id is unique, so the sort key identifies a click and ReplacingMergeTree
-- folds a click that was ever inserted twice; batches also carry an insert
-- deduplication token, so a retried batch is dropped whole.
CREATE TABLE IF NOT EXISTS clicks
(
    click_id       String,
    ts             DateTime64(3, 'UTC'),
    brand_id       LowCardinality(String),
    campaign_id    String,
    influencer_id  String,
    link_id        UInt64,
    link_code      String,
    visitor_hash   UInt64,
    country        LowCardinality(String),
    device         LowCardinality(String),
    browser        LowCardinality(String),
    os             LowCardinality(String),
    referer_host   String,
    utm_source     String,
    utm_medium     String,
    utm_campaign   String,
    utm_term       String,
    utm_content    String,
    is_bot         UInt8,
    bot_reason     LowCardinality(String),
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (brand_id, toDate(ts), link_id, click_id)
TTL toDateTime(ts) + INTERVAL 13 MONTH
SETTINGS non_replicated_deduplication_window = 10000
