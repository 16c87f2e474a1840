"""The money loop: commission lifecycle, the conversion ledger, payouts and verifiable statements."""
