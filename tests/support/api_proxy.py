"""A reverse proxy in front of the test kube-apiserver that plays the apiserver's transient
faults for one client (test code only).

Right after an apiserver restart, the port is open before the apiextensions server has
installed the handlers of the CRDs: for a moment every request under a CRD's API path gets
`404 page not found` (plain text, not a Status object), though the CRD and its objects are
all there. Whether a client lands in that moment is a race, so a test cannot count on the
real apiserver to produce it. The proxy produces it on demand: `not_served(prefix)` answers
404 page not found for every path under prefix (and cuts the streams open there, as a
restart does) until it is lifted. Everything else goes through unchanged, watch streams
included; when the upstream is down, the client's connection is dropped, as a refused
connection would be.

The client talks plain HTTP to the proxy (a kubeconfig from `kubeconfig(token)`); the proxy
talks TLS to the apiserver, verifying it against the cluster's CA.
"""
from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path
from typing import Optional

import aiohttp
import yaml
from aiohttp import web

from tests.support.k8s import LocalCluster, free_port

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "proxy-connection", "te"}


class APIProxy:
    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.refused_404: list[str] = []  # paths answered with the not-served 404, for the test to check
        self._prefix: Optional[str] = None
        self._open: dict[int, tuple[str, web.Request]] = {}  # by id(request)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="api-proxy", daemon=True)
        self._runner: Optional[web.AppRunner] = None
        self._session: Optional[aiohttp.ClientSession] = None

    # -- test API -----------------------------------------------------------------

    def start(self) -> "APIProxy":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def not_served(self, prefix: Optional[str]) -> None:
        """From now on, 404 page not found for every path under prefix (None lifts it);
        streams open under prefix are cut, so their clients reconnect into the 404."""
        def apply() -> None:
            self._prefix = prefix
            if prefix is None:
                return
            for path, request in list(self._open.values()):
                if path.startswith(prefix) and request.transport is not None:
                    request.transport.close()
        self._loop.call_soon_threadsafe(apply)

    def kubeconfig(self, token: str, path: Path) -> Path:
        user = self.cluster.tokens[token][0]
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "proxied", "cluster": {"server": self.url}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "proxied", "context": {"cluster": "proxied", "user": user}}],
            "current-context": "proxied",
        }))
        return path

    # -- server -------------------------------------------------------------------

    async def _start(self) -> None:
        context = ssl.create_default_context(cafile=str(self.cluster.ca_file))
        context.check_hostname = False  # the serving cert names the apiserver's own addresses
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context),
                                              auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        for _, request in list(self._open.values()):
            if request.transport is not None:
                request.transport.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._prefix is not None and request.path.startswith(self._prefix):
            self.refused_404.append(request.path)
            return web.Response(status=404, text="404 page not found\n", content_type="text/plain")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        key = id(request)
        self._open[key] = (request.path, request)
        response: Optional[web.StreamResponse] = None
        try:
            assert self._session is not None
            async with self._session.request(request.method, self.cluster.server + request.path_qs,
                                             headers=headers, data=body or None) as upstream:
                response = web.StreamResponse(status=upstream.status, headers={
                    k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP})
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, ConnectionError, asyncio.TimeoutError):
            # The apiserver is down or went away mid-stream: the client sees its connection
            # drop, as it would with no proxy in between.
            if request.transport is not None:
                request.transport.close()
            return response if response is not None else web.Response(status=503)
        finally:
            self._open.pop(key, None)
