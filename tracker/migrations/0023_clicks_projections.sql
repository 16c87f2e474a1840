-- The daily click rollup moves into the raw table as a projection, so that an ingest batch and
-- its rollup are one part on disk: both land or neither does.
--
-- Why: with materialized views, one INSERT writes a part per table and a deduplication token
-- per table. A MergeTree that is not replicated records the token before it commits the part,
-- so a process killed in between (embedded mode, where chDB runs inside the worker) remembers
-- the token of a part it never kept: the retry is dropped from `clicks` but the views already
-- have the batch. A projection lives inside each part of `clicks`, so after a crash the worker
-- checks which click ids of the batch `clicks` holds and inserts only the missing ones, with a
-- fresh token: every count stays exact.
--
-- `clicks_daily` becomes a plain view over `clicks` with the projection's exact expressions,
-- so report queries (filtering on brand and day) read the projection. The hourly rollup is
-- dropped: reports build distinct visitors per (link, UTC day) from raw clicks, which
-- measured faster (~0.2 s for 30 days of 10M clicks) than merging stored hourly visitor sets.
-- Apply with ingest stopped (`tracker serve` in embedded mode migrates before ingest starts);
-- on a large existing table MATERIALIZE PROJECTION rewrites every part once.
DROP VIEW IF EXISTS clicks_hourly_mv;
DROP VIEW IF EXISTS clicks_daily_mv;
ALTER TABLE clicks MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild';
ALTER TABLE clicks ADD PROJECTION IF NOT EXISTS daily
(
    SELECT
        brand_id,
        toDate(ts, 'UTC'),
        campaign_id,
        influencer_id,
        link_id,
        countIf(is_bot = 0),
        countIf(is_bot = 1)
    GROUP BY brand_id, toDate(ts, 'UTC'), campaign_id, influencer_id, link_id
);
ALTER TABLE clicks MATERIALIZE PROJECTION daily SETTINGS mutations_sync = 1;
DROP TABLE IF EXISTS clicks_hourly;
DROP TABLE IF EXISTS clicks_daily;
CREATE VIEW IF NOT EXISTS clicks_daily AS
SELECT
    brand_id,
    toDate(ts, 'UTC') AS day,
    campaign_id,
    influencer_id,
    link_id,
    countIf(is_bot = 0) AS clicks,
    countIf(is_bot = 1) AS bot_clicks
FROM clicks
GROUP BY brand_id, day, campaign_id, influencer_id, link_id
