"""Partitions as Ray tasks, on a local Ray or a remote cluster (`ray://head:10001`).

Same contract as the local pool: tasks read their input slice and write checkpoints
and results straight to storage, and return only a small PartitionResult. Op-level
events travel through a Ray queue actor and reach the driver's event log as they
happen. Ray's own task retries are off: the driver's retry loop owns retries, so
every attempt (including a killed worker) is an event with its retry_count."""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from typing import Any, Callable, Optional

from ..run import PartitionTask, run_partition


def _ray() -> Any:
    try:
        import ray
    except ImportError as err:  # pragma: no cover - ray is a declared extra
        from ..errors import RecipeError
        raise RecipeError("executor_type ray needs Ray: pip install 'datajuicer-ft[ray]'") from err
    return ray


def _remote_run(task: PartitionTask, events: Any, flag: Any) -> Any:
    ray = _ray()
    import djworker.ops._load_all  # noqa: F401  (registers ops in this worker)

    def emit(event: dict) -> None:
        events.put(event)

    def should_stop() -> bool:
        return bool(ray.get(flag.is_set.remote()))

    return run_partition(task, emit, should_stop)


class _StopFlag:
    def __init__(self) -> None:
        self.value = False

    def set(self) -> None:
        self.value = True

    def is_set(self) -> bool:
        return self.value


class RayExecutor:
    def __init__(self, recipe: Any, on_event: Callable[[dict], None]):
        ray = _ray()
        self.ray = ray
        self.on_event = on_event
        address = recipe.ray_address or os.environ.get("RAY_ADDRESS") or "local"
        self.started_local = address == "local"
        env_vars = {k: os.environ[k] for k in ("DJ_EXTRA_OP_MODULES", "PYTHONPATH") if os.environ.get(k)}
        kwargs: dict[str, Any] = {"address": address, "ignore_reinit_error": True, "log_to_driver": False,
                                  "runtime_env": {"env_vars": env_vars} if env_vars else None}
        if self.started_local:
            kwargs.update(num_cpus=recipe.np, include_dashboard=False)
            if os.environ.get("DJ_RAY_TEMP_DIR"):
                kwargs["_temp_dir"] = os.environ["DJ_RAY_TEMP_DIR"]
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            ray.init(**{k: v for k, v in kwargs.items() if v is not None})
        from ray.util.queue import Queue

        self.events = Queue()
        self.flag = ray.remote(num_cpus=0)(_StopFlag).remote()
        self.task_fn = ray.remote(_remote_run).options(max_retries=0, num_cpus=1)
        self._closing = threading.Event()
        self._drainer = threading.Thread(target=self._drain, name="dj-ray-events", daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                batch = self.events.get_nowait_batch(min(max(self.events.qsize(), 1), 1000))
            except Empty:
                if self._closing.is_set():
                    return
                self._closing.wait(0.1)
                continue
            except Exception:  # the queue actor is gone (shutdown or cluster loss)
                return
            for event in batch:
                self.on_event(event)

    def submit(self, task: PartitionTask) -> Future:
        ref = self.task_fn.remote(task, self.events, self.flag)
        return ref.future()

    def request_stop(self) -> None:
        self.flag.set.remote()

    def shutdown(self, kill: bool = False) -> None:
        # Let in-flight events land before the queue actor goes away.
        self._closing.set()
        self._drainer.join(timeout=10)
        if self.owns_ray:
            self.ray.shutdown()


def ray_available() -> Optional[str]:
    try:
        import ray  # noqa: F401
    except ImportError:
        return "ray is not installed"
    return None
