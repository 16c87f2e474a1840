-- What happened to a payout after its run: "paid" with the brand's reference. Written
-- under the brand's payout lock after checking none exists, so a payout is paid once.
CREATE TABLE IF NOT EXISTS payout_events
(
    brand_id   LowCardinality(String),
    payout_id  String,
    event      LowCardinality(String),
    reference  String,
    key_id     String,
    at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (brand_id, payout_id, event)
