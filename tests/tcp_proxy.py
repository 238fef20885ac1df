"""A TCP proxy for tests that need a dependency to stop, hang and come back without touching the
machine's shared server: point the app at the proxy's port, then

- `stop()`: close the listener and every connection (new connections are refused);
- `hang()`: keep accepting, but forward nothing either way (a frozen server or a black hole);
- `start()`: drop what `hang()` held and forward again on the same port (a restarted server).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    """Forwards a local port to the server of upstream_url, until told otherwise; `url` is
    upstream_url pointed at the proxy."""

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        assert parts.hostname and parts.port, f"{upstream_url} names no host:port"
        self.upstream = (parts.hostname, parts.port)
        self.mode = "up"
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = self._listen(0)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        self.url = urlunsplit(parts._replace(netloc=netloc))

    def stop(self) -> None:
        """Refuse connections: close the listener and every open connection."""
        with self._lock:
            self.mode = "down"
            listener, self._listener = self._listener, None
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            listener.close()
        self._close_all()

    def hang(self) -> None:
        """Accept connections but forward nothing, on new and open connections alike."""
        with self._lock:
            self.mode = "hang"

    def start(self) -> None:
        """Forward again; connections held while hanging are closed, as a restarted server would."""
        with self._lock:  # one step, so a connection is either held (and closed here) or forwarded
            self.mode = "up"
            held, self._sockets = list(self._sockets), set()
            needs_listener = self._listener is None
        for sock in held:
            self._drop(sock)
        if needs_listener:
            self._listen(self.port)

    def close(self) -> None:
        """Stop for good."""
        self.stop()

    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="proxy-accept", daemon=True).start()
        return int(listener.getsockname()[1])

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed
                return
            with self._lock:
                self._sockets.add(client)
                hang = self.mode == "hang"
            if hang:
                continue  # held open, never answered
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                self._drop(client)
                continue
            upstream.settimeout(None)
            self._track(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="proxy-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if self.mode == "hang":
                continue  # swallowed: the peer waits for an answer that never comes
            try:
                dst.sendall(data)
            except OSError:
                break
        self._drop(src)
        self._drop(dst)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            self._drop(sock)


@contextmanager
def tcp_proxy(upstream_url: str) -> Iterator[TcpProxy]:
    """A proxy to the server of upstream_url, closed afterwards."""
    proxy = TcpProxy(upstream_url)
    try:
        yield proxy
    finally:
        proxy.close()
