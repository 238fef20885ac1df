"""PostgreSQL and Redis servers of a test's own, for tests that stop and restart them for real
(the machine's shared servers stay up for everyone else). Each listens on 127.0.0.1 on a free
port with its data in a temporary directory; `restart()` stops the server and starts it again on
the same port and data, and `close()` stops it and removes the data, whatever happened before.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` OS user
(its binaries run through `runuser`); the data directory and the socket live in a directory under
/tmp that the user owns (pytest's own temporary directories are private to root)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import redis
import sqlalchemy as sa


def free_port() -> int:
    """A TCP port nothing listens on at the moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server child process without persistence: a restart loses every message it held."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - the child keeps it
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._proc = subprocess.Popen([*argv, "--dir", str(self.workdir)], stdout=log, stderr=log)
        log.close()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        """Kill the server (SIGKILL: a crash; what it held in memory is gone)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def restart(self, down_s: float) -> None:
        """Stop, stay down for down_s, start again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        """Stop for good."""
        self.stop()


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


class PrivatePostgres:
    """A PostgreSQL cluster of its own (fsync off: nothing here must survive the machine)."""

    def __init__(self) -> None:
        bin_dir = _pg_bin()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="sift-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.admin_url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.running = False
        try:
            if os.geteuid() == 0:
                shutil.chown(self.root, user="postgres")
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
            self.start()
        except BaseException:
            self.close()
            raise

    def _run(self, tool: str, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, str(self.bin / tool), *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        """Start the server on its port (unless it runs) and wait until it accepts connections."""
        if self.running:
            return
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "start")
        self.running = True

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; `immediate` is a crash as far as clients can tell (and a recovery at start)."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
            self.running = False

    def restart(self, down_s: float) -> None:
        """Stop, stay down for down_s, start again on the same port and data."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"sift_test_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.admin_url.rsplit("/", 1)[0] + f"/{name}"

    def close(self) -> None:
        """Stop the server (if it runs) and remove its data."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
