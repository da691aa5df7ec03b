"""Test-only ops for job management, beside tests.support.test_ops (slow_mapper, flaky_mapper).

Load with DJ_EXTRA_OP_MODULES=tests.support.test_ops,tests.support.slow_ops. Rows pass
through unchanged, so a recipe's output does not depend on these ops."""
from __future__ import annotations

import os
import subprocess
import time

import pyarrow as pa

from djworker.ops.base import Mapper, register


@register("spawning_mapper")
class SpawningMapper(Mapper):
    """Starts a long `sleep` the way Ray starts its daemons and records its pid under
    `pid_dir`, then sleeps `seconds`. detached=True double-forks it, so it is nobody's
    descendant and only the driver's run marker (DJ_JOB_DRIVER) still ties it to the job."""

    pid_dir: str
    seconds: float = 0.0
    detached: bool = False

    def process(self, table: pa.Table) -> pa.Table:
        os.makedirs(self.pid_dir, exist_ok=True)
        pidfile = os.path.join(self.pid_dir, f"{os.getpid()}-{time.time_ns()}")
        if self.detached:
            script = f"sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}"
            subprocess.run(["sh", "-c", script], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        else:
            proc = subprocess.Popen(["sleep", "300"], start_new_session=True, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            with open(f"{pidfile}.tmp", "w") as fh:
                fh.write(str(proc.pid))
            os.replace(f"{pidfile}.tmp", pidfile)
        time.sleep(self.seconds)
        return table
