-- Influencers archived out of the app's lists (their links, clicks and sales stay).
ALTER TABLE influencers
    ADD COLUMN IF NOT EXISTS archived UInt8 DEFAULT 0
