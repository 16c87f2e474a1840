-- The brand app: where a follower of a disabled or expired link of this campaign is sent
-- ('' = an HTML 410 page), and campaigns archived out of the app's lists (kept for reports).
ALTER TABLE campaigns
    ADD COLUMN IF NOT EXISTS fallback_url String DEFAULT '',
    ADD COLUMN IF NOT EXISTS archived UInt8 DEFAULT 0
