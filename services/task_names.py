"""The names of Sift's tasks and the sender a domain function sends its follow-up tasks through.

Celery-free on purpose: the domain decides what follows a task and names it here; the entry
points hand it a sender bound to their Celery app (services.enqueue.sender_for), tests one that
records.
"""

from __future__ import annotations

from collections.abc import Callable

PROCESS_EVENTS = "sift.ingest.process_events"
SWEEP = "sift.ingest.sweep"
REFRESH_SUGGESTIONS = "sift.ingest.refresh_suggestions"  # after the FAQ base or the ticket kind's models change
TRAIN_RUN = "sift.train.run"
TRAIN_CHECK = "sift.train.check"
REINDEX = "sift.train.reindex"
CALIBRATE_MATCH = "sift.train.calibrate_match"
DRIFT_CHECK = "sift.train.drift"  # reads the model-serving worker's vector store
BUILD_VECTOR_INDEXES = "sift.train.build_vector_indexes"  # embedded Qdrant only; a server indexes itself
ALERTS_PROCESS = "sift.alerts.process"
ALERTS_SWEEP = "sift.alerts.sweep"
WEBHOOK_DELIVER = "sift.alerts.deliver"

# sender(task_name, *args): sends one task by name; raises BrokerUnavailable when the broker is down.
Sender = Callable[..., None]
