"""A prefork worker imports the encoder's libraries before it forks: every pool child, the first one
and one forked after a child was SIGKILLed, starts with them in memory, so a replacement child takes
its dead sibling's work over after loading the model only, not after importing torch again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

from tests.integration.test_ownership import plain_env

LIBRARIES = ("libtorch_cpu", "onnxruntime_pybind11_state")


def pool_child(worker: subprocess.Popen[bytes], *, other_than: int = 0, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited"
        with suppress(FileNotFoundError):
            children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
            if children and int(children[0]) != other_than:
                return int(children[0])
        time.sleep(0.2)
    raise AssertionError(f"no pool child within {timeout_s} s")


def ready(log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while b"ready." not in log.read_bytes():
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def mapped(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name in LIBRARIES if name in maps}


def test_every_pool_child_starts_with_the_encoder_libraries_in_memory(data_dir: Path, redis_url: str) -> None:
    log = open(data_dir / "worker.log", "wb")  # noqa: SIM115 - the child keeps it
    argv = [sys.executable, "-m", "services.cli.app", "worker", "--own-store", "--pool=prefork", "--concurrency=1"]
    worker = subprocess.Popen(
        argv,
        env=plain_env(data_dir, SIFT_BROKER_URL=redis_url, SIFT_LOG_LEVEL="INFO"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    try:
        first = pool_child(worker)
        assert mapped(first) == set(LIBRARIES), (data_dir / "worker.log").read_text()[-3000:]
        ready(data_dir / "worker.log")
        os.kill(first, signal.SIGKILL)  # the worker forks a replacement
        second = pool_child(worker, other_than=first)
        assert mapped(second) == set(LIBRARIES)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
