"""Beat entries. Run exactly one beat (two beats double every schedule: celery #2856)."""

from __future__ import annotations

from typing import Any

from services.config import Settings
from services.task_names import ALERTS_SWEEP, BUILD_VECTOR_INDEXES, DRIFT_CHECK, SWEEP, TRAIN_CHECK


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """What beat sends, and how often."""
    return {
        "sweep-stuck-events": {
            "task": SWEEP,
            "schedule": settings.sweep_interval_s,
            "options": {"queue": "ingest", "expires": settings.sweep_interval_s},
        },
        "evaluate-alerts-and-retry-deliveries": {
            "task": ALERTS_SWEEP,
            "schedule": settings.alert_sweep_interval_s,
            "options": {"queue": "alerts", "expires": settings.alert_sweep_interval_s},
        },
        "start-due-training-runs": {
            "task": TRAIN_CHECK,
            "schedule": settings.train_check_interval_s,
            "options": {"queue": "train", "expires": settings.train_check_interval_s},
        },
        "build-vector-indexes": {
            "task": BUILD_VECTOR_INDEXES,
            "schedule": settings.vector_index_interval_s,
            "options": {"queue": "train", "expires": settings.vector_index_interval_s},
        },
        "measure-model-drift": {
            "task": DRIFT_CHECK,
            "schedule": settings.drift_interval_s,
            "options": {"queue": "train", "expires": settings.drift_interval_s},
        },
    }
