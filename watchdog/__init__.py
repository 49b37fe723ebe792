"""watchdog: an alerting daemon for log search, warehouse freshness and AWS DMS."""

__version__ = "0.1.0"
