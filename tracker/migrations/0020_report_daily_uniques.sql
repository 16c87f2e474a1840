-- Exact unique clicks per (link, UTC day), a cache the reports fill from the hourly
-- rollup's visitor sets (uniqExactMerge is the costly part of a report). A row stays
-- valid while the (link, day)'s non-bot click count in clicks_hourly still equals
-- `clicks`: reports check that on every read and recompute stale days, so the cache
-- changes how fast an answer comes, never the answer.
CREATE TABLE IF NOT EXISTS report_daily_uniques
(
    brand_id       LowCardinality(String),
    day            Date,
    link_id        UInt64,
    campaign_id    String,
    influencer_id  String,
    clicks         UInt64,
    uniques        UInt64,
    computed_at    DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(day)
ORDER BY (brand_id, day, link_id, campaign_id, influencer_id)
TTL day + INTERVAL 13 MONTH
