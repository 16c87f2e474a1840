-- The conversions recorded before conversion_order existed.
INSERT INTO conversion_order (brand_id, occurred_at, conversion_id, order_id)
SELECT brand_id, occurred_at, conversion_id, order_id FROM conversions FINAL
