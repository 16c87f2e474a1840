-- Store connectors: the platform a store runs on and its webhook signing secret,
-- sealed with AES-256-GCM under a sub-key of the server secret (core.credentials;
-- checking a webhook needs the secret itself, so it cannot be a one-way hash). The
-- previous secret keeps verifying for a grace period after a rotation.
ALTER TABLE stores
    ADD COLUMN IF NOT EXISTS platform LowCardinality(String) DEFAULT 'custom',
    ADD COLUMN IF NOT EXISTS webhook_secret String DEFAULT '',
    ADD COLUMN IF NOT EXISTS previous_webhook_secret String DEFAULT '',
    ADD COLUMN IF NOT EXISTS webhook_secret_rotated_at Nullable(DateTime64(3, 'UTC'))
