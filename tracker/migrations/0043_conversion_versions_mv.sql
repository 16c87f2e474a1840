-- Feeds conversion_versions from every insert into conversions.
CREATE MATERIALIZED VIEW IF NOT EXISTS conversion_versions_mv TO conversion_versions AS
SELECT brand_id, order_id, version, conversion_id, status, currency, amount, refunded_amount, commission,
       attribution, link_code, campaign_id, influencer_id, review, change, occurred_at, updated_at,
       now64(3, 'UTC') AS recorded_at
FROM conversions
