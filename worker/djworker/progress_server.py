"""The driver's live progress as JSON over HTTP (`GET /progress`, `GET /healthz`), and any
extra routes (the dashboard: `/`, `/api/dashboard`, `/metrics`).

The operator polls this, as KubeRay polls the Ray dashboard, and mirrors it into
the CR status; the driver itself never talks to Kubernetes."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

import orjson


Route = Callable[[], tuple[int, bytes, str]]  # -> (status code, body, content type)


def serve(port: int, snapshot: Callable[[], dict[str, Any]], host: str = "0.0.0.0",
          routes: Optional[dict[str, Route]] = None) -> ThreadingHTTPServer:
    routes = routes or {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            kind = "application/json"
            if self.path.startswith("/progress"):
                body, code = orjson.dumps(snapshot()), 200
            elif self.path.startswith("/healthz"):
                body, code = b'{"ok": true}', 200
            elif path in routes:
                code, body, kind = routes[path]()
            else:
                body, code = b'{"error": "not found"}', 404
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # polls are not news
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="dj-progress", daemon=True).start()
    return server
