"""A loopback TCP proxy whose replies can be held back: a loaded machine's latency, on demand."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager


class SlowProxy:
    """Forwards to `upstream`; every reply chunk waits `delay` seconds (0 until a test sets it)."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream, self.delay = upstream, 0.0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._opened: list[socket.socket] = [self._listener]
        self.address = self._listener.getsockname()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self._opened += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if replies and self.delay:
                    time.sleep(self.delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        for sock in self._opened:
            sock.close()


@contextmanager
def slow_proxy(host: str, port: int):
    proxy = SlowProxy((host, port))
    try:
        yield proxy
    finally:
        proxy.close()
