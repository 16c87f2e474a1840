"""Conversion quality: brand rules, flags on conversions, review decisions, the coupon-leak detector.

Reads ClickHouse only (conversions, clicks, the registry) and writes its own tables
(``conversion_clicks``, ``conversion_flags``, ``conversion_reviews``, ``quality_rules``).
Flags are evaluated after the fact, not when a postback is recorded: two of the four rules
need what exists only later (the click's visitor once the click is ingested, the other
conversions of a visitor's day or of a coupon's week). ``tracker.quality.sync`` brings a
brand's facts and flags up to date before anything reads them.
"""
