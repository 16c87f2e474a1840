-- The ledger's order: each conversion once, sorted by (brand, occurred_at, conversion_id), so a
-- page of GET /api/v1/conversions reads only its own granules (read in order, LIMIT) and then
-- looks its orders up in conversions FINAL by primary key. Versions of an order share the
-- key (occurred_at and conversion_id never change) and fold.
CREATE TABLE IF NOT EXISTS conversion_order
(
    brand_id       LowCardinality(String),
    occurred_at    DateTime64(3, 'UTC'),
    conversion_id  String,
    order_id       String
)
ENGINE = ReplacingMergeTree
ORDER BY (brand_id, occurred_at, conversion_id)
