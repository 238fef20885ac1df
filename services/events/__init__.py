"""Accepting events, the group writer, the batch pipeline and the batch use case."""
