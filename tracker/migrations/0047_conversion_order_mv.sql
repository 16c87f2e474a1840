-- Feeds conversion_order from every insert into conversions.
CREATE MATERIALIZED VIEW IF NOT EXISTS conversion_order_mv TO conversion_order AS
SELECT brand_id, occurred_at, conversion_id, order_id FROM conversions
