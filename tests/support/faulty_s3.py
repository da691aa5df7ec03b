"""A fault-injecting HTTP proxy between s3fs and moto's S3 server: object storage misbehaving.

Each request, at a configured rate, gets one fault drawn from the configured kinds:

| kind       | what the client sees                                                         |
|------------|------------------------------------------------------------------------------|
| `slowdown` | 503 SlowDown (S3's throttle), the request not applied                        |
| `internal` | 500 InternalError, the request not applied                                   |
| `throttle` | 400 Throttling (503 for HEAD, which has no body to carry a code), not applied |
| `latency`  | the answer, after a delay drawn from `latency_s` (seconds: a p99 of seconds)  |
| `reset`    | the request *applied*, then the connection reset (RST) part-way into the body |
| `truncate` | the request applied, the full Content-Length announced, half the body sent, then FIN |
| `short`    | the request applied, half the body sent *as if whole* (Content-Length to match): |
|            | only a size or checksum kept elsewhere can tell; not in the default kinds        |

Faults after forwarding are the nasty ones: a PUT that took effect but whose answer was lost,
a GET whose body stops short. The draws come from one `random.Random(seed)`, so the sequence
of decisions is the same for the same seed (which request gets which depends on the order the
requests arrive in). `tally` counts what was injected; `set()` changes the plan while it runs
(e.g. `set(rate=0)` when the outage ends)."""
from __future__ import annotations

import argparse
import http.client
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import urlsplit

KINDS = ("slowdown", "internal", "throttle", "latency", "reset", "truncate")  # the default mix
ALL_KINDS = (*KINDS, "short")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass(frozen=True)
class FaultPlan:
    rate: float = 0.0  # share of requests that get a fault (0..1)
    kinds: tuple[str, ...] = KINDS
    latency_s: tuple[float, float] = (0.5, 3.0)
    methods: tuple[str, ...] = ()  # only requests with these HTTP methods get faults (empty: all)

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(ALL_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {ALL_KINDS}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within 0..1 (got {self.rate})")


def _error_body(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>faulty-s3</RequestId></Error>").encode()


REFUSALS = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
    "throttle": (400, "Throttling", "Rate exceeded"),
}


@dataclass
class FaultyS3:
    """The proxy; `url` is what a client uses as its endpoint."""

    upstream: str
    plan: FaultPlan = field(default_factory=FaultPlan)
    seed: int = 0
    tally: Counter = field(default_factory=Counter)  # injected faults by kind, plus "requests"

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        up = urlsplit(self.upstream)
        self._up_host, self._up_port = up.hostname or "127.0.0.1", up.port or 80
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ---- control ----------------------------------------------------------------------
    def set(self, **changes: object) -> None:
        with self._lock:
            self.plan = replace(self.plan, **changes)

    def draw(self, method: str = "GET") -> tuple[Optional[str], float]:
        """The next request's fault (None for none) and its latency."""
        with self._lock:
            self.tally["requests"] += 1
            plan = self.plan
            hit = self._rng.random() < plan.rate and (not plan.methods or method in plan.methods)
            kind = self._rng.choice(plan.kinds) if hit else None
            delay = self._rng.uniform(*plan.latency_s) if kind == "latency" else 0.0
            if kind:
                self.tally[kind] += 1
            return kind, delay

    @property
    def faults(self) -> int:
        return sum(n for k, n in self.tally.items() if k != "requests")

    def start(self, port: int = 0) -> "FaultyS3":
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = _Server(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-s3", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ---- forwarding ---------------------------------------------------------------------
    def forward(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
                ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self._up_host, self._up_port, timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    conn.putheader(name, value)
            if body or method in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            length = resp.getheader("Content-Length") if method == "HEAD" else str(len(data))
            kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
            return resp.status, resp.reason, [*kept, ("Content-Length", length or "0")], data
        finally:
            conn.close()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away mid-request (a killed driver) is not worth a traceback."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as s3fs's connection pool expects
    proxy: FaultyS3

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._body()
        kind, delay = self.proxy.draw(self.command)
        if kind in REFUSALS:
            status, code, message = REFUSALS[kind]
            if self.command == "HEAD":
                status = 503
            payload = b"" if self.command == "HEAD" else _error_body(code, message)
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if delay:
            time.sleep(delay)
        status, reason, headers, data = self.proxy.forward(self.command, self.path, list(self.headers.items()), body)
        if kind == "short" and self.command == "GET":
            data = data[: len(data) // 2]
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Content-Length", str(len(data)))]
        self.send_response(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        if kind in ("reset", "truncate"):
            self._tear(kind, data)
            return
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _tear(self, kind: str, data: bytes) -> None:
        """The request was applied upstream; its answer is cut short."""
        self.close_connection = True
        sent = data[: len(data) // 2] if self.command != "HEAD" else b""
        if kind == "truncate" and not sent:
            self._headers_buffer = []  # nothing to cut short: close before any answer
        else:
            self.end_headers()
            self.wfile.write(sent)
        self.wfile.flush()
        if kind == "reset":  # SO_LINGER 0: close sends RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            self.connection.shutdown(socket.SHUT_RDWR) if kind == "truncate" else None
        except OSError:
            pass
        self.connection.close()

    def finish(self) -> None:
        try:
            super().finish()
        except (OSError, ValueError):
            pass  # the connection was torn on purpose

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


def main(argv: Optional[list[str]] = None) -> int:
    """Run a proxy in front of an S3 endpoint until stdin closes (for manual experiments)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("upstream")
    p.add_argument("--rate", type=float, default=0.05)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args(argv)
    proxy = FaultyS3(a.upstream, FaultPlan(a.rate, tuple(a.kinds.split(","))), a.seed).start(a.port)
    print(proxy.url, flush=True)
    sys.stdin.read()
    proxy.stop()
    print(dict(proxy.tally), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
