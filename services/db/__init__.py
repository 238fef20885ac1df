"""SQL storage: models, the session scope and repositories."""
