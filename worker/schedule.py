"""Beat entries. Run exactly one beat (two beats double every schedule: celery #2856)."""

from __future__ import annotations

from typing import Any

from services.config import Settings
from services.enqueue import SWEEP


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """What beat sends, and how often."""
    return {
        "sweep-stuck-events": {
            "task": SWEEP,
            "schedule": settings.sweep_interval_s,
            "options": {"queue": "ingest", "expires": settings.sweep_interval_s},
        },
    }
