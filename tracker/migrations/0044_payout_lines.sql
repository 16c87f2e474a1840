-- Payout lines, written by one INSERT per run under the brand's payout lock
-- (tracker.money.payouts). The payout's own fields ride on each line, so a payout exists
-- exactly when its lines do. seq numbers the lines of one (conversion, influencer): 0 the
-- commission, then clawbacks (or top-ups). ORDER BY is a line's identity, so a retried
-- insert folds into the same row and a line is in at most one payout.
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
ORDER BY (brand_id, conversion_id, influencer_id, seq)
SETTINGS non_replicated_deduplication_window = 1000
