-- Hourly click rollup per link (UTC hours), fed by 0012. `visitors` keeps the
-- exact set of visitor hashes of the hour, so unique clicks per (link, UTC day)
-- stay exact after merging hours: uniqExactMerge over a day's hours.
CREATE TABLE IF NOT EXISTS clicks_hourly
(
    brand_id       LowCardinality(String),
    hour           DateTime('UTC'),
    campaign_id    String,
    influencer_id  String,
    link_id        UInt64,
    clicks         SimpleAggregateFunction(sum, UInt64),
    bot_clicks     SimpleAggregateFunction(sum, UInt64),
    visitors       AggregateFunction(uniqExact, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (brand_id, hour, campaign_id, influencer_id, link_id)
TTL hour + INTERVAL 13 MONTH
SETTINGS non_replicated_deduplication_window = 10000
