-- Brands: the tenants. Registry rows are versioned; read them with FINAL.
CREATE TABLE IF NOT EXISTS brands
(
    id          String,
    name        String,
    currency    LowCardinality(String),
    created_at  DateTime64(3, 'UTC'),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY id
