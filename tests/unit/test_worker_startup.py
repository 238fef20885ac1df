"""A worker freezes what it imported at start-up out of the garbage collector's sight, so full
collections do not pause its batches (docs/decisions/gc-freeze.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import gc, json, time
import worker.app
worker.app._import_model_libraries()  # the worker_init hook: before a prefork pool forks, or a solo worker's first task
frozen = gc.get_freeze_count()
started = time.perf_counter()
gc.collect()
print(json.dumps({"frozen": frozen, "tracked": len(gc.get_objects()), "full_gc_s": time.perf_counter() - started}))
"""


def test_the_worker_init_hook_freezes_the_imported_libraries() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True
    )
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["frozen"] > 300_000, probe  # torch, transformers, SQLAlchemy, Celery: about 570,000 objects
    assert probe["tracked"] < 10_000, probe  # what a full collection still traverses
