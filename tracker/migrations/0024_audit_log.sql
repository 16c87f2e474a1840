-- Every registry change, key change, re-attribution, review decision and payout
-- action of a brand: who (the acting key's id, or "admin"), what, before and
-- after (JSON). Rows are never updated; a retried insert of the same entry id
-- folds into one (ReplacingMergeTree on the full key).
CREATE TABLE IF NOT EXISTS audit_log
(
    brand_id   String,
    at         DateTime64(3, 'UTC'),
    id         String,
    key_id     String,
    action     LowCardinality(String),
    object_id  String,
    before     String,
    after      String
)
ENGINE = ReplacingMergeTree
ORDER BY (brand_id, at, id)
