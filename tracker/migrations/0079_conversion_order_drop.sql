-- conversion_ledger (0073) and conversion_ledger_influencer (0076) give the ledger its order and
-- its rows: the order-only table is read by nothing and no longer fed.
DROP VIEW IF EXISTS conversion_order_mv;
DROP TABLE IF EXISTS conversion_order
