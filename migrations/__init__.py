"""Alembic migrations (env.py reads services.config unless a URL is passed in)."""
