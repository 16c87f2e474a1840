-- A deleted fee is a new version with amount 0 and deleted = 1 (ReplacingMergeTree keeps
-- the newest): reports sum it as nothing, lists leave it out, the audit log keeps the old one.
ALTER TABLE fees
    ADD COLUMN IF NOT EXISTS deleted UInt8 DEFAULT 0
