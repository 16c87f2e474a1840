-- Exchange rates a brand sets: 1 unit of `currency` = `rate` units of the brand currency.
CREATE TABLE IF NOT EXISTS fx_rates
(
    brand_id    String,
    currency    LowCardinality(String),
    rate        Decimal(18, 8),
    updated_at  DateTime64(3, 'UTC'),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (brand_id, currency)
