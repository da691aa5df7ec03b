"""dj-process shows a rich progress bar on a terminal and plain lines otherwise."""
from __future__ import annotations

import os
import pty
import subprocess
import sys

from tests.support.engine import dj_process, env_with, make_recipe


def test_terminal_gets_a_progress_bar(tmp_path):
    recipe = make_recipe(tmp_path, rows=300)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "djworker.cli.process", "--config", str(recipe), "--job_id", "tty"],
                            stdin=follower, stdout=follower, stderr=follower, env=env_with(), cwd=tmp_path)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert "partitions" in screen and "samples" in screen and "3/3" in screen


def test_pipes_get_plain_lines(tmp_path):
    proc = dj_process(make_recipe(tmp_path, rows=300), "plain")
    assert proc.returncode == 0 and "\x1b[" not in proc.stdout + proc.stderr
