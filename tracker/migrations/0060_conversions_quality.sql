-- Conversion quality (#18): the order's country as the store reports it (ISO 3166 alpha-2,
-- '' when not sent). Coupon-only conversions have no click, so this is the country the
-- coupon-leak detector compares with the countries of the link's clicks.
ALTER TABLE conversions ADD COLUMN IF NOT EXISTS country LowCardinality(String) DEFAULT ''
