-- Which wins when an order carries both a qualifying click id and a coupon of this
-- campaign: `click` (default) or `coupon`.
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS attribution_priority LowCardinality(String) DEFAULT 'click'
