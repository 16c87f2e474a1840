-- Review decisions on flagged conversions (POST /api/v1/conversions/{id}/review): approve
-- releases the commission, reject voids it. The latest decision wins; every decision is
-- also in the audit log.
CREATE TABLE IF NOT EXISTS conversion_reviews
(
    brand_id       LowCardinality(String),
    conversion_id  String,
    order_id       String,
    decision       LowCardinality(String),
    note           String,
    flags          Array(LowCardinality(String)),
    key_id         String,
    at             DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(at)
ORDER BY (brand_id, conversion_id)
