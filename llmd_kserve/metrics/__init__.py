"""Endpoint metrics: Prometheus text parsing, the async scraper, and the router's own metrics."""
