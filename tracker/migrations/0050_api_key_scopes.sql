-- Scoped API keys: a name, a scope (read, write, influencer; the brand key of
-- POST /api/v1/brands and every key made before scopes is a write key) and, for
-- an influencer key, the influencer it reads. A key's public id stays
-- "key_" + the first 16 hex digits of key_hash, so it is not stored.
ALTER TABLE api_keys
    ADD COLUMN IF NOT EXISTS name String DEFAULT '',
    ADD COLUMN IF NOT EXISTS scope LowCardinality(String) DEFAULT 'write',
    ADD COLUMN IF NOT EXISTS influencer_id String DEFAULT ''
