"""Sentiment alerting: the watchlist, alert rules, webhooks, and model-drift alerts."""
