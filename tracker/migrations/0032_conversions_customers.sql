-- Customers as keyed hashes only (core.credentials), and the platform side of an order
-- that came from a store connector (JSON: its total, its refunds by platform refund id,
-- the platform's last change), so a state rebuilt from here merges later events exactly.
ALTER TABLE conversions
    ADD COLUMN IF NOT EXISTS customer_hash String DEFAULT '',
    ADD COLUMN IF NOT EXISTS email_hash String DEFAULT '',
    ADD COLUMN IF NOT EXISTS platform_state String DEFAULT ''
