CREATE TABLE IF NOT EXISTS campaigns
(
    brand_id                 String,
    id                       String,
    name                     String,
    attribution_window_days  UInt16,
    commission_type          LowCardinality(String),
    commission_value         Decimal(18, 4),
    click_id_param           String,
    allowed_domains          Array(String),
    created_at               DateTime64(3, 'UTC'),
    version                  UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (brand_id, id)
