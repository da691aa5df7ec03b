"""A TCP proxy in front of one port that can cut the line for a while (test code only).

`cut(seconds)` closes every open connection (both ends see a reset/EOF, as on a network
partition that ends in timeouts) and, for `seconds`, answers each new connection by closing it
at once; then connections go through again. Ray Client's gRPC channel sees exactly what a
driver pod sees when its path to the head blips."""
from __future__ import annotations

import socket
import threading
import time
from typing import Optional


class TCPProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self.refused = 0
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def cut(self, seconds: float) -> None:
        with self._lock:
            self._down_until = time.monotonic() + seconds
            socks, self._open = self._open, set()
        for sock in socks:
            _close(sock)

    def close(self) -> None:
        self._closed = True
        self.cut(0)
        _close(self.listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self._down_until:
                self.refused += 1
                _close(client)
                continue
            try:
                server: Optional[socket.socket] = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open |= {client, server}
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            _close(sock)
            with self._lock:
                self._open.discard(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
