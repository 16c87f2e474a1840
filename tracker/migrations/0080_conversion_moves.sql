-- The versions of re-attributed conversions (attribution 'manual'): what tells an influencer's ledger
-- pages that a conversion moved on. conversion_ledger_influencer keeps a conversion's older versions
-- under its first influencer; such a row is stale exactly when a later version sits under another
-- influencer, and that later version is here: a conversion changes influencer only by re-attribution
-- (tracker.money.reattribute), whose version and every later one say 'manual'. Small (manual changes
-- only), so a page checks its rows here at little cost (tracker.money.ledger).
CREATE TABLE IF NOT EXISTS conversion_moves
(
    brand_id       LowCardinality(String),
    conversion_id  String,
    version        UInt64,
    influencer_id  String,
    order_id       String
)
ENGINE = MergeTree
ORDER BY (brand_id, conversion_id, version)
