-- The conversions recorded before conversion_ledger_influencer existed (rows the view also wrote fold).
INSERT INTO conversion_ledger_influencer (brand_id, influencer_id, occurred_at, conversion_id, order_id, version,
                                          status, attributed, attribution, link_code, campaign_id, store_id,
                                          currency, amount, refunded_amount, original_amount, original_currency,
                                          commission, hold_days, review, reason, updated_at)
SELECT brand_id, influencer_id, occurred_at, conversion_id, order_id, version, status, attributed, attribution,
       link_code, campaign_id, store_id, currency, amount, refunded_amount, original_amount, original_currency,
       commission, hold_days, review, reason, updated_at
FROM conversions FINAL
