-- An influencer's email as a keyed hash only (same key as customers' emails), so a
-- conversion whose customer email is the influencer's own is flagged self_referral.
ALTER TABLE influencers ADD COLUMN IF NOT EXISTS email_hash String DEFAULT ''
