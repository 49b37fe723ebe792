"""The demo: local stand-ins for search, the warehouse and AWS DMS, demo data, and one round of watchdog."""
