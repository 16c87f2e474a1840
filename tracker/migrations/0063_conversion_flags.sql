-- The quality flags of a conversion (fast_click, visitor_repeat, self_referral,
-- coupon_leak) with their evidence (JSON), as last evaluated by tracker.quality.flags.
-- A conversion that was never flagged has no row; one whose flags cleared has a row
-- with an empty array. Latest evaluation wins.
CREATE TABLE IF NOT EXISTS conversion_flags
(
    brand_id       LowCardinality(String),
    order_id       String,
    conversion_id  String,
    flags          Array(LowCardinality(String)),
    evidence       String,
    evaluated_at   DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(evaluated_at)
ORDER BY (brand_id, order_id)
