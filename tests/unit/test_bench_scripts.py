"""Every benchmark script still imports what it uses and parses its options: a module that moves
breaks a bench at once, not the next time someone measures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
# No --help: recipes.py takes positional arguments; the others are helpers the benches import.
NOT_SCRIPTS = {"recipes.py", "apikey.py", "clients.py", "quality_flow.py", "request_profile.py", "catalogue_vectors.py"}
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name not in NOT_SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_bench_script_starts(script: str) -> None:
    done = subprocess.run(
        [sys.executable, script, "--help"], cwd=BENCH, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
