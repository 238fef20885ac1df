"""The HTTP API (FastAPI): one router per resource; the only place FastAPI is imported."""
