-- Feeds clicks_daily (0021), then backfills it once from the hourly rollup. Clicks
-- inserted while this file runs could be counted twice: apply it with ingest stopped
-- (`tracker serve` in embedded mode migrates before ingest starts).
CREATE MATERIALIZED VIEW IF NOT EXISTS clicks_daily_mv TO clicks_daily AS
SELECT
    brand_id,
    toDate(ts, 'UTC') AS day,
    campaign_id,
    influencer_id,
    link_id,
    toUInt64(countIf(is_bot = 0)) AS clicks,
    toUInt64(countIf(is_bot = 1)) AS bot_clicks
FROM clicks
GROUP BY brand_id, day, campaign_id, influencer_id, link_id;

INSERT INTO clicks_daily (brand_id, day, campaign_id, influencer_id, link_id, clicks, bot_clicks)
SELECT brand_id, toDate(hour, 'UTC') AS day, campaign_id, influencer_id, link_id, sum(clicks), sum(bot_clicks)
FROM clicks_hourly
GROUP BY brand_id, day, campaign_id, influencer_id, link_id
