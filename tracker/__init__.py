"""tracker: self-hosted affiliate-link and conversion tracking."""

__version__ = "0.1.0"
