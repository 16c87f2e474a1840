CREATE TABLE IF NOT EXISTS influencers
(
    brand_id    String,
    id          String,
    name        String,
    handle      String,
    platform    String,
    created_at  DateTime64(3, 'UTC'),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (brand_id, id)
