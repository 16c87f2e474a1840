-- The re-attributed conversions recorded before conversion_moves existed (their last version is manual).
INSERT INTO conversion_moves (brand_id, conversion_id, version, influencer_id, order_id)
SELECT brand_id, conversion_id, version, influencer_id, order_id
FROM conversions
WHERE attribution = 'manual'
