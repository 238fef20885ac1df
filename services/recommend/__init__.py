"""Recommendation feeds: interactions, scoring, item filters, feeds and similar items."""
