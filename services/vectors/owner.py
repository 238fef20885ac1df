"""One owner per data dir and per embedded vector store: exclusive lock files with the holder inside.

Qdrant Edge keeps its shards in the process that opens them; a second process that tries (and fails
on the locked WAL) leaves the owner's trackers broken. So two flocks, each with "pid=… host=…"
written inside for messages, and dropped by the kernel when the holder dies, however it dies:

- SIFT_DATA_DIR/owner.lock: taken at start by `sift up` and by a worker that owns the embedded
  store, held for the process's life; a forked pool child shares it with its parent.
- <vectors dir>/open.lock: taken by whichever process opens the shards, before it touches one,
  and never shared with a child (two pool children must not both open the shards).

Within one process a lock is counted, not re-taken: the API and worker threads of `sift up`, and
tests, may open the store more than once.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import threading
from pathlib import Path

from services.errors import VectorStoreUnavailable

_lock = threading.Lock()
_held: dict[Path, tuple[int, int, int]] = {}  # lock file -> (descriptor, references, pid that took it)

SHARE_HINT = (
    "one process owns an embedded vector store: run everything in that one `sift up`, "
    "or give separate processes a Qdrant server (SIFT_QDRANT_URL)"
)


class OwnedElsewhere(VectorStoreUnavailable):
    """Another live process holds the data dir's owner lock: this one cannot use the embedded store."""

    code = "vector_store_owned_elsewhere"


def lock_file_for(data_dir: Path) -> Path:
    """Where a data dir's owner lock lives (held by `sift up`, or by a worker that owns the store)."""
    return data_dir / "owner.lock"


def store_lock_file(vectors_dir: Path) -> Path:
    """The lock of the process that has the embedded shards open (never shared with a forked child)."""
    return vectors_dir / "open.lock"


def acquire(path: Path, *, share_with_children: bool = True) -> None:
    """Hold the lock at path (counted within this process); OwnedElsewhere names the holder.

    A forked child shares its parent's lock when share_with_children, else it must take its own
    (which fails while the parent, or a sibling, has it)."""
    path = path.resolve()
    with _lock:
        held = _held.get(path)
        if held is not None and held[2] != os.getpid() and not share_with_children:
            os.close(held[0])  # our copy of the parent's descriptor: closing it leaves the parent's lock
            del _held[path]
            held = None
        if held is not None:
            _held[path] = (held[0], held[1] + 1, held[2])
            return
        _held[path] = (_lock_or_refuse(path), 1, os.getpid())


def _lock_or_refuse(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise OwnedElsewhere(f"{path.parent} is in use by {holder(path)}; {SHARE_HINT}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid={os.getpid()} host={socket.gethostname()}\n".encode(), 0)
    os.fsync(fd)
    return fd


def release(path: Path) -> None:
    """Drop one reference to the lock at path; the last one unlocks it (a forked child's copy of
    its parent's lock is closed, never unlocked)."""
    path = path.resolve()
    with _lock:
        held = _held.get(path)
        if held is None:
            return
        fd, refs, pid = held
        if refs > 1:
            _held[path] = (fd, refs - 1, pid)
            return
        del _held[path]
        if pid == os.getpid():
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def holds(path: Path) -> bool:
    """True while this process holds (or shares, as a forked child) the lock at path."""
    return path.resolve() in _held


def holder(path: Path) -> str:
    """Who holds the lock at path, as its file says ("pid=… host=…"), for messages."""
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return f"the process {text}" if text else "another process"
