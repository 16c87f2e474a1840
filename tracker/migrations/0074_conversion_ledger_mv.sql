-- Feeds conversion_ledger from every insert into conversions.
CREATE MATERIALIZED VIEW IF NOT EXISTS conversion_ledger_mv TO conversion_ledger AS
SELECT brand_id, occurred_at, conversion_id, order_id, version, status, attributed, attribution, link_code,
       influencer_id, campaign_id, store_id, currency, amount, refunded_amount, original_amount, original_currency,
       commission, hold_days, review, reason, updated_at
FROM conversions
