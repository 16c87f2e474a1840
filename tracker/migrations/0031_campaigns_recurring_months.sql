-- Returning customers and subscriptions: a later order of a customer is credited to the
-- link that brought the customer's first attributed order for this many months (0: never).
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS recurring_months UInt16 DEFAULT 12
