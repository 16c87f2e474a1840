-- Feeds conversion_ledger_influencer from every insert into conversions.
CREATE MATERIALIZED VIEW IF NOT EXISTS conversion_ledger_influencer_mv TO conversion_ledger_influencer AS
SELECT brand_id, influencer_id, occurred_at, conversion_id, order_id, version, status, attributed, attribution,
       link_code, campaign_id, store_id, currency, amount, refunded_amount, original_amount, original_currency,
       commission, hold_days, review, reason, updated_at
FROM conversions
