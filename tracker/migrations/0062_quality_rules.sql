-- A brand's conversion-quality rules (PUT /api/v1/rules); the latest row wins.
CREATE TABLE IF NOT EXISTS quality_rules
(
    brand_id                         String,
    min_click_seconds                UInt32,
    max_conversions_per_visitor_day  UInt32,
    self_referral                    UInt8,
    coupon_leak                      UInt8,
    coupon_leak_factor               Decimal(9, 2),
    updated_at                       DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY brand_id
