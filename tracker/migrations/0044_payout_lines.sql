-- Payout lines: one row per (payout, conversion, kind), written by one INSERT per run
-- under the brand's payout lock (tracker.money.payouts). The payout's own fields ride on
-- each line, so a payout exists exactly when its lines do. A commission line has seq 0; a
-- conversion's n-th clawback has seq n. ORDER BY is a line's identity, so a retried insert
-- folds into the same row.
CREATE TABLE IF NOT EXISTS payout_lines
(
    brand_id       LowCardinality(String),
    payout_id      String,
    influencer_id  String,
    currency       LowCardinality(String),
    conversion_id  String,
    order_id       String,
    kind           LowCardinality(String),
    seq            UInt32,
    amount         Decimal(18, 4),
    period_end     Date,
    created_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (brand_id, conversion_id, kind, seq)
SETTINGS non_replicated_deduplication_window = 1000
