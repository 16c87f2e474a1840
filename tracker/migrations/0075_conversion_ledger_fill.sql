-- The conversions recorded before conversion_ledger existed (rows the view also wrote fold by version).
INSERT INTO conversion_ledger (brand_id, occurred_at, conversion_id, order_id, version, status, attributed,
                               attribution, link_code, influencer_id, campaign_id, store_id, currency, amount,
                               refunded_amount, original_amount, original_currency, commission, hold_days, review,
                               reason, updated_at)
SELECT brand_id, occurred_at, conversion_id, order_id, version, status, attributed, attribution, link_code,
       influencer_id, campaign_id, store_id, currency, amount, refunded_amount, original_amount, original_currency,
       commission, hold_days, review, reason, updated_at
FROM conversions FINAL
