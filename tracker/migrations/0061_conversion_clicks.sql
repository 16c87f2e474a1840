-- The click behind each click-attributed conversion: country, device, referer host, UTM
-- values, visitor and time, copied from `clicks` once the click is there. Reports group
-- conversions by these keys and the quality rules read the visitor and the click time.
-- Filled by tracker.quality.facts (read side), not at record time: a postback is
-- attributed without reading its click, which may not be ingested yet. Keyed by click id;
-- a click row never changes, so a copy written twice folds into one.
CREATE TABLE IF NOT EXISTS conversion_clicks
(
    brand_id      LowCardinality(String),
    click_id      String,
    ts            DateTime64(3, 'UTC'),
    link_id       UInt64,
    visitor_hash  UInt64,
    country       LowCardinality(String),
    device        LowCardinality(String),
    referer_host  String,
    utm_source    String,
    utm_medium    String,
    utm_campaign  String
)
ENGINE = ReplacingMergeTree
ORDER BY (brand_id, click_id)
