-- The commission lifecycle: a campaign's hold (days after occurred_at before an approved
-- conversion's commission is payable) and its rule history (JSON list of
-- {from_ms, type, value, hold_days}: the rule in force from that instant), so an order is
-- priced by the rule in force when it occurred, also after a PATCH.
ALTER TABLE campaigns
    ADD COLUMN IF NOT EXISTS hold_days UInt16 DEFAULT 30,
    ADD COLUMN IF NOT EXISTS rules String DEFAULT ''
