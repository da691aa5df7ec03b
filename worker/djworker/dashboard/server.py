"""The dashboard's routes on the progress server, for the driver and for `dj-monitor --web`."""
from __future__ import annotations

from importlib import resources
from typing import Any, Callable, Optional

import orjson

from ..errors import DJError
from ..progress_server import Route, serve
from .prometheus import CONTENT_TYPE, render
from .source import JobView


def page() -> bytes:
    return resources.files(__package__).joinpath("assets", "dashboard.html").read_bytes()


def routes(view: JobView) -> dict[str, Route]:
    """`/` the page, `/api/dashboard` its data, `/metrics` Prometheus text."""
    html = page()
    metrics = render(view.data)

    def guarded(fn: Callable[[], bytes], kind: str) -> Route:
        def route() -> tuple[int, bytes, str]:
            try:
                return 200, fn(), kind
            except DJError as err:  # no summary yet, or the job's files are unreadable: say so, keep serving
                return 503, orjson.dumps({"error": f"{type(err).__name__}: {err}"}), "application/json"
            except Exception as err:  # noqa: BLE001 (a page that cannot be drawn must not take the server down)
                return 500, orjson.dumps({"error": f"{type(err).__name__}: {err}"}), "application/json"
        return route

    return {
        "/": lambda: (200, html, "text/html; charset=utf-8"),
        "/api/dashboard": guarded(lambda: orjson.dumps(view.data(), default=str), "application/json"),
        "/metrics": guarded(metrics, CONTENT_TYPE),
    }


def serve_job(job_id: str, base_dir: Optional[str], port: int, host: str = "127.0.0.1") -> Any:
    """`dj-monitor --web`: the page for any job, from its files; /progress computed the driver's way."""
    view = JobView(job_id, base_dir)
    view.data()  # an unknown job fails here, before a port is taken
    return serve(port, view.progress, host=host, routes=routes(view))
