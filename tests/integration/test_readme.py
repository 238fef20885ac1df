"""The README is an executable contract: every command line of its ```sh blocks, run in order in one
shell against a real `make run` (a fresh data dir, a free port, given only through the documented
SIFT_DATA_DIR and SIFT_PORT), exits 0 and answers no error. A ``` block without `sh` is not run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.test_embedded_up import free_port

ROOT = Path(__file__).resolve().parents[2]


def commands(markdown: str) -> list[str]:
    """The command lines of the ```sh blocks, continuation lines joined, in order."""
    out: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", markdown, flags=re.S | re.M):
        pending = ""
        for line in block.splitlines():
            pending += line
            if line.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            if pending.strip():
                out.append(pending.strip())
            pending = ""
    return out


def script(lines: list[str]) -> str:
    """One bash script that marks where each command starts and how it ended."""
    body = [f"echo '@@CMD {i}'\n{line}\nprintf '\\n@@RC {i} %s\\n' \"$?\"" for i, line in enumerate(lines)]
    return "\n".join([*body, "kill $(jobs -p) 2>/dev/null; true"]) + "\n"


def outcomes(output: str) -> dict[int, tuple[int, str]]:
    """Per command: its exit code and what it printed."""
    found: dict[int, tuple[int, str]] = {}
    for part in output.split("@@CMD ")[1:]:
        number, _, rest = part.partition("\n")
        match = re.search(rf"^@@RC {number} (\d+)$", rest, flags=re.M)
        printed = rest[: match.start()] if match else rest
        found[int(number)] = (int(match.group(1)) if match else -1, printed)
    return found


def test_the_readme_commands_pass_in_order(tmp_path: Path) -> None:
    lines = commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(lines) >= 20 and any("sift ingest" in line for line in lines)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIFT_")}
    env.update(SIFT_DATA_DIR=str(tmp_path / "sift"), SIFT_PORT=str(port), COLUMNS="200")
    if "SIFT_ONNX_DIR" in os.environ:  # the shared int8 cache of the tests (a documented setting)
        env["SIFT_ONNX_DIR"] = os.environ["SIFT_ONNX_DIR"]
    log = tmp_path / "up.log"
    with log.open("wb") as out:  # `make run` as the README says, without re-checking the installed .venv
        server = subprocess.Popen(
            ["make", "-s", "-o", ".venv/.installed", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", log)
        (tmp_path / "readme.sh").write_text(script(lines))
        done = subprocess.run(
            ["bash", str(tmp_path / "readme.sh")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            stdin=subprocess.DEVNULL,
        )
        results = outcomes(done.stdout + done.stderr)
        report = "\n".join(f"[{i}] rc={rc} {lines[i]}\n{printed[-1500:]}" for i, (rc, printed) in results.items())
        assert sorted(results) == list(range(len(lines))), report
        failed = [i for i, (rc, printed) in results.items() if rc != 0 or '{"error":' in printed]
        assert not failed, f"README lines failed: {failed}\n{report}"
        shown = "\n".join(printed for _, printed in results.values())
        assert "verified alert-" in shown, report  # the signed delivery reached the local receiver
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def wait_ready(base: str, log: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"`make run` was not ready in {timeout_s:.0f} s\n{log.read_text()[-4000:]}")
