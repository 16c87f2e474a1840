CREATE MATERIALIZED VIEW IF NOT EXISTS clicks_hourly_mv TO clicks_hourly AS
SELECT
    brand_id,
    toStartOfHour(ts) AS hour,
    campaign_id,
    influencer_id,
    link_id,
    toUInt64(countIf(is_bot = 0)) AS clicks,
    toUInt64(countIf(is_bot = 1)) AS bot_clicks,
    uniqExactStateIf(visitor_hash, is_bot = 0) AS visitors
FROM clicks
GROUP BY brand_id, hour, campaign_id, influencer_id, link_id
