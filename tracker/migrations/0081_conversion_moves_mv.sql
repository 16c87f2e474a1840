-- Feeds conversion_moves from every insert into conversions.
CREATE MATERIALIZED VIEW IF NOT EXISTS conversion_moves_mv TO conversion_moves AS
SELECT brand_id, conversion_id, version, influencer_id, order_id
FROM conversions
WHERE attribution = 'manual'
