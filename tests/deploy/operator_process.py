"""The chart's operator container, run as a local process with the chart's ServiceAccount.

The test apiserver has no kubelet, so instead of the Deployment's pod this runs the
Deployment's own command, args and env, authenticated with the static token the apiserver
maps to system:serviceaccount:dj-system:datajuicer-operator: the process can do exactly
what the chart's RBAC lets that ServiceAccount do."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from djoperator.settings import parse
from tests.support.k8s import stop_process, tail, wait_until_healthy


class ChartOperator:
    def __init__(self, container: dict[str, Any], kubeconfig: Path, log: Path) -> None:
        self.container, self.kubeconfig, self.log = container, kubeconfig, log
        self.proc: Optional[subprocess.Popen] = None

    @property
    def argv(self) -> list[str]:
        return [*self.container["command"], *self.container.get("args", [])]

    @property
    def health_url(self) -> str:
        liveness = parse(self.container["args"], env={}).liveness
        assert liveness, "the chart must keep the liveness endpoint on"
        return liveness.replace("0.0.0.0", "127.0.0.1")

    def start(self) -> "ChartOperator":
        bin_dir = str(Path(sys.executable).parent)  # the venv's console scripts: dj-operator
        env = {"PATH": os.pathsep.join([bin_dir, "/usr/bin:/bin"]), "HOME": os.environ.get("HOME", "/tmp"),
               "LANG": "C.UTF-8", "KUBECONFIG": str(self.kubeconfig)}
        env.update({e["name"]: e["value"] for e in self.container.get("env", []) if "value" in e})
        env["TMPDIR"] = os.environ.get("TMPDIR", "/tmp")  # the pod's /tmp is an emptyDir; here, the host's
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(self.argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        wait_until_healthy(self.proc, self.health_url, self.log)
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def tail(self, lines: int = 40) -> str:
        return tail(self.log, lines) if self.log.exists() else ""
