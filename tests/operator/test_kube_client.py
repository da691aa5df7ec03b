"""kube.api_client fails fast while the apiserver is away, and handlers.transient turns that
into a one-line TemporaryError retried one interval later. A local HTTP server plays an
apiserver that is starting (503 with Retry-After: 10); a closed port plays one that is down."""
from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path
from typing import Iterator

import kopf
import pytest
from kubernetes.client import VersionApi
from kubernetes.client.exceptions import ApiException

from djoperator import kube
from djoperator.handlers import transient
from tests.support.k8s import free_port


class Starting(http.server.BaseHTTPRequestHandler):
    """Answers everything as kube-apiserver does before it is ready."""
    hits = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).hits += 1
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "server is starting",
                           "reason": "ServiceUnavailable", "details": {"retryAfterSeconds": 10}, "code": 503}).encode()
        self.send_response(503)
        self.send_header("Retry-After", "10")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def use_kubeconfig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: str) -> None:
    """As KUBECONFIG would (the client reads that variable once, at import), outside a pod."""
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": server}}],
        "users": [{"name": "t", "user": {"token": "t"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}]}))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(path))


@pytest.fixture
def starting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Starting]]:
    Starting.hits = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Starting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    use_kubeconfig(monkeypatch, tmp_path, f"http://127.0.0.1:{server.server_port}")
    yield Starting
    server.shutdown()
    server.server_close()


def test_a_503_with_retry_after_fails_the_call_at_once_instead_of_sleeping_it_out(starting):
    began = time.monotonic()
    with pytest.raises(ApiException) as raised:
        VersionApi(kube.api_client()).get_code(_request_timeout=kube.REQUEST_TIMEOUT)
    assert raised.value.status == 503
    assert time.monotonic() - began < 3, "urllib3's default would sleep 10 s per Retry-After, three times"
    assert starting.hits == 1
    retry = transient(raised.value, 0.5)
    assert isinstance(retry, kopf.TemporaryError) and retry.delay == 0.5
    assert "ServiceUnavailable" in str(retry) or "503" in str(retry)


def test_a_refused_connection_fails_the_call_within_a_second(tmp_path, monkeypatch):
    use_kubeconfig(monkeypatch, tmp_path, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    began = time.monotonic()
    with pytest.raises(Exception) as raised:
        VersionApi(kube.api_client()).get_code(_request_timeout=kube.REQUEST_TIMEOUT)
    assert time.monotonic() - began < 1
    assert kube.unreachable(raised.value), repr(raised.value)
    retry = transient(raised.value, 2.0)
    assert isinstance(retry, kopf.TemporaryError) and retry.delay == 2.0
    assert str(retry).startswith("the apiserver did not answer (MaxRetryError")
    assert "\n" not in str(retry), "one line in the log per retry"


def test_only_an_apiserver_that_cannot_answer_is_transient():
    assert isinstance(transient(kube.APIUnavailable("404 page not found"), 1.0), kopf.TemporaryError)
    for status in (500, 502, 503, 504, 429, 0):
        assert kube.unreachable(ApiException(status=status)), status
    for status in (400, 403, 404, 409, 422):
        assert not kube.unreachable(ApiException(status=status)), status
        assert transient(ApiException(status=status), 1.0) is None, status
    assert transient(ValueError("a bug"), 1.0) is None, "a bug keeps its traceback"
