-- Exact click counts and unique clicks per (link, UTC day, value of one click dimension): the
-- hour, country, device, UTM values and referer host. A cache the reports fill from raw clicks,
-- as report_daily_uniques (0020) is for whole days: a (link, day)'s rows of a dimension are used
-- only while their clicks and bot clicks add up to that (link, day)'s counts in clicks_daily,
-- else the day is recomputed first, so the cache changes how fast an answer comes, never the
-- answer. Unique clicks: distinct visitors per (link, UTC day, value), which a report adds up per
-- row exactly as it does from raw clicks.
CREATE TABLE IF NOT EXISTS report_dim_uniques
(
    brand_id       LowCardinality(String),
    dim            LowCardinality(String),
    day            Date,
    link_id        UInt64,
    value          String,
    campaign_id    String,
    influencer_id  String,
    clicks         UInt64,
    bot_clicks     UInt64,
    uniques        UInt64,
    computed_at    DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(day)
ORDER BY (brand_id, dim, day, link_id, value)
TTL day + INTERVAL 13 MONTH
