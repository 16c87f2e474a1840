-- Daily click counts per link (UTC days), fed by 0022. Reports read it for UTC-aligned
-- ranges, next to report_daily_uniques (0020): 24x fewer rows than clicks_hourly and no
-- visitor sets to read. Same dedup window as the other click tables, so a retried ingest
-- block is dropped here too.
CREATE TABLE IF NOT EXISTS clicks_daily
(
    brand_id       LowCardinality(String),
    day            Date,
    campaign_id    String,
    influencer_id  String,
    link_id        UInt64,
    clicks         SimpleAggregateFunction(sum, UInt64),
    bot_clicks     SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (brand_id, day, campaign_id, influencer_id, link_id)
TTL day + INTERVAL 13 MONTH
SETTINGS non_replicated_deduplication_window = 10000
