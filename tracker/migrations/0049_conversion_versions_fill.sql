-- The versions of conversions recorded before conversion_versions existed (those merges kept),
-- recorded when they were last updated.
INSERT INTO conversion_versions (brand_id, order_id, version, conversion_id, status, currency, amount, refunded_amount,
                                 commission, attribution, link_code, campaign_id, influencer_id, review, change,
                                 occurred_at, updated_at, recorded_at)
SELECT brand_id, order_id, version, conversion_id, status, currency, amount, refunded_amount, commission, attribution,
       link_code, campaign_id, influencer_id, review, change, occurred_at, updated_at, updated_at
FROM conversions
