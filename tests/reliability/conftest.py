"""Servers and mounts that only the reliability tests need: tmpfs mounts (a full disk, a
read-only directory), an S3 endpoint that a test can take down and bring back, and one
that checks credentials."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.support.k8s import free_port


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """mount(name, size, read_only) -> a fresh tmpfs under tmp_path; unmounted at teardown.

    A real filesystem limit, not a mock: a 256 KiB tmpfs answers writes with ENOSPC and a
    read-only one with EROFS, as a full or read-only volume does. Needs root (CI runs as root);
    without it the test is skipped rather than simulated."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "1m", read_only: bool = False) -> Path:
        path = tmp_path / name
        path.mkdir()
        opts = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, size: str) -> None:
    """Grow a tmpfs in place (its files stay): the operator freed space."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


class RestartableS3:
    """moto's S3 server on a fixed port that a test can stop and start again.

    moto keeps its buckets in process-wide state, so objects written before a stop are there
    after the restart, as with a real endpoint that was briefly unreachable."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None

    def start(self) -> "RestartableS3":
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def restartable_s3(s3_env: dict[str, str]) -> Iterator[RestartableS3]:
    s3 = RestartableS3().start()
    yield s3
    s3.stop()


AUTH_SERVER = r'''
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print("http://%s:%s" % server.get_host_and_port(), flush=True)
sys.stdin.read()  # until the test closes our stdin
'''


@pytest.fixture(scope="session")
def s3_with_auth() -> Iterator[str]:
    """An S3 endpoint that checks credentials (moto with INITIAL_NO_AUTH_ACTION_COUNT=0).

    Its own process: moto reads that setting once per process, and the shared S3 server
    must keep accepting any key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    proc = subprocess.Popen([sys.executable, "-c", AUTH_SERVER], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = proc.stdout.readline().strip()
    if not url:
        proc.kill()
        raise RuntimeError("the credential-checking S3 server did not start")
    yield url
    proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
