-- The commission lifecycle on each conversion version: the rule and hold applied (from
-- the campaign's rule in force at occurred_at, carried by every later version), the
-- review hook quality rules set, what made this version (change) and why the order
-- was attributed or not (reason), in words.
ALTER TABLE conversions
    ADD COLUMN IF NOT EXISTS commission_rule String DEFAULT '',
    ADD COLUMN IF NOT EXISTS hold_days UInt16 DEFAULT 30,
    ADD COLUMN IF NOT EXISTS review UInt8 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS change String DEFAULT '',
    ADD COLUMN IF NOT EXISTS reason String DEFAULT ''
