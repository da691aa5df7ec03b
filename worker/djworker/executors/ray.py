"""Partitions as Ray tasks, on a local Ray or a remote cluster (`ray://head:10001`).

Same contract as the local pool: tasks read their input slice and write checkpoints
and results straight to storage, and return only a small PartitionResult. Op-level
events travel through one small mailbox actor and reach the driver's event log as
they happen; a partition's future resolves only after every event its task sent
has been written, so PARTITION_COMPLETE always follows that partition's OP events.
Ray's own task retries are off: the driver's retry loop owns retries, so every
attempt (including one whose worker was killed) is an event with its retry_count.

A local Ray (`ray_address` and RAY_ADDRESS unset, or `local`) is started by this
executor and torn down by `shutdown`, which then kills, by pid, any process it
started that outlived `ray.shutdown()`. Ray fate-shares those processes with the
driver (PR_SET_PDEATHSIG), so a SIGKILLed driver takes them along too.

On a remote cluster the mailbox doubles as the cluster's heartbeat: it lives on the head
node, and the driver talks to it every ~0.1 s. When no call has got through for
CLUSTER_GRACE_S (longer than Ray Client's own 30 s reconnect grace, so a blip that Ray
rides out costs nothing), the cluster is taken as lost and the job ends with ClusterLost
(exit 7, retryable): its finished partitions and ops are checkpointed, and a resume on a
running cluster picks up from there. Auto-connect is off, so a lost connection is never
quietly replaced by a fresh local Ray.

Over ~300 lines on purpose: the task contract, the mailbox (and its heartbeat) and the local
Ray's lifecycle are one protocol, read together."""
from __future__ import annotations

import atexit
import os
import queue
import signal
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Optional

import psutil
from loguru import logger

from ..errors import ClusterLost, DJError, RecipeError
from ..run import PartitionTask, run_partition
from .base import Executor

# Forwarded to workers of a remote cluster (a local Ray inherits the driver's env).
# Credentials are not: worker pods get their own, and runtime_env is visible in Ray's dashboard.
FORWARDED_ENV = ("DJ_EXTRA_OP_MODULES", "PYTHONPATH", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


class RayUnavailable(DJError):
    """Ray is missing or its cluster cannot be reached: fix the address or start the cluster."""

    exit_code = 5


def _ray() -> Any:
    # Read by Ray at import: without it, a call after a lost Ray Client connection would start a local Ray.
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    try:
        import ray
    except ImportError as err:  # pragma: no cover - ray is a declared extra
        raise RayUnavailable("executor_type ray needs Ray: pip install 'datajuicer-ft[ray]'") from err
    return ray


class Mailbox:
    """Worker -> driver events, and driver -> worker stop requests, in one tiny actor."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.stop = False

    def put(self, event: dict) -> None:
        self.events.append(event)

    def take(self) -> list[dict]:
        out, self.events = self.events, []
        return out

    def request_stop(self) -> None:
        self.stop = True

    def should_stop(self) -> bool:
        return self.stop


def _remote_run(task: PartitionTask, mailbox: Any) -> Any:
    ray = _ray()
    import djworker.ops._load_all  # noqa: F401  (registers ops in this worker)

    def emit(event: dict) -> None:
        ray.get(mailbox.put.remote(event))  # waited on: the event is in the mailbox before the task returns

    def should_stop() -> bool:
        return bool(ray.get(mailbox.should_stop.remote()))

    return run_partition(task, emit, should_stop)


def _warm() -> int:
    import djworker.ops._load_all  # noqa: F401  (the slow imports happen while the driver plans)
    import djworker.run  # noqa: F401

    return os.getpid()


def ray_address(recipe: Any) -> str:
    return recipe.ray_address or os.environ.get("RAY_ADDRESS") or "local"


def init_kwargs(recipe: Any, address: str) -> dict[str, Any]:
    """ray.init arguments: a local Ray is sized by `np`; a remote one brings its own resources."""
    kwargs: dict[str, Any] = {"address": address, "log_to_driver": False}
    if address == "local":
        kwargs.update(num_cpus=recipe.np, include_dashboard=False)
        if os.environ.get("DJ_RAY_TEMP_DIR"):  # Ray's socket paths must stay under 108 characters
            kwargs["_temp_dir"] = os.environ["DJ_RAY_TEMP_DIR"]
    else:
        env_vars = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
        if env_vars:
            kwargs["runtime_env"] = {"env_vars": env_vars}
    return kwargs


# No answer from the head-node mailbox for this long means the cluster is gone. Past Ray
# Client's reconnect grace (30 s), so a connection blip Ray recovers from is ridden out.
CLUSTER_GRACE_S = 45.0  # DJ_RAY_CLUSTER_GRACE_S overrides it
# The mailbox's place on a remote cluster: the head node, so the heartbeat is the head's.
HEAD_NODE = {"node:__internal_head__": 0.001}

def cluster_grace_s() -> float:
    raw = os.environ.get("DJ_RAY_CLUSTER_GRACE_S")
    if raw is None:
        return CLUSTER_GRACE_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise RecipeError(f"DJ_RAY_CLUSTER_GRACE_S must be a number of seconds above 0 (got {raw!r}); "
                          f"unset it for the default {CLUSTER_GRACE_S:g}")
    return value


CONNECT_ATTEMPTS = 3
# Ray Client's disconnect waits, without a timeout, for its streaming RPC thread to end,
# which needs the cluster's answer; a stopping driver must not wait on that forever.
CLIENT_DISCONNECT_TIMEOUT_S = 10.0


def _connect(ray: Any, kwargs: dict[str, Any]) -> None:
    """ray.init, retrying a Ray Client refusal: a head that has just come up can fail to start
    the per-driver server behind its client port once, and then take the next driver fine."""
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            ray.init(**kwargs)
            return
        except ConnectionAbortedError:  # "Initialization failure from server"; a timeout is not retried
            if not kwargs["address"].startswith("ray://") or attempt == CONNECT_ATTEMPTS:
                raise
            ray.shutdown()
            time.sleep(2 * attempt)


class RayExecutor(Executor):
    def __init__(self, recipe: Any, on_event: Callable[[dict], None]):
        ray = _ray()
        self.ray = ray
        self.on_event = on_event
        self.address = ray_address(recipe)
        self.slots = recipe.np
        self.owns_ray = not ray.is_initialized()
        before = _descendants()
        if self.owns_ray:
            handlers = _signal_handlers()
            try:
                _connect(ray, init_kwargs(recipe, self.address))
            except Exception as err:
                raise RayUnavailable(f"cannot start or reach Ray at {self.address!r}: {type(err).__name__}: {err}; "
                                     "check ray_address / RAY_ADDRESS (ray://head:10001 for a remote cluster, "
                                     "unset for a local Ray); a cluster with token authentication needs the same "
                                     "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN in this driver's environment") from err
            finally:
                _restore(handlers)  # Ray's core worker takes SIGTERM; the driver's stop path needs it back
        self.started_pids = sorted(_descendants() - before)  # the local Ray's processes, killed at shutdown
        self.remote = self.address != "local"  # only a remote cluster can be lost while this driver lives
        self.grace_s = cluster_grace_s()
        self._last_contact = time.monotonic()
        self._contact_error = ""
        placement = {"resources": HEAD_NODE} if self.remote else {}
        self.mailbox = ray.remote(num_cpus=0, **placement)(Mailbox).remote()
        self.task_fn = ray.remote(_remote_run).options(max_retries=0, num_cpus=1)
        self._stop_sent = False
        self._finished: queue.Queue[tuple[Future, Future]] = queue.Queue()
        self._closing = threading.Event()
        self._drainer = threading.Thread(target=self._drain, name="dj-ray-events", daemon=True)
        self._drainer.start()

    def warm_up(self) -> None:
        """Boot one worker per slot and import the ops there, while the driver plans."""
        warm = self.ray.remote(_warm).options(max_retries=0, num_cpus=1)
        self._warming = [warm.remote() for _ in range(self.slots)]

    def submit(self, task: PartitionTask) -> Future:
        out: Future = Future()
        try:
            ref = self.task_fn.remote(task, self.mailbox)
        except Exception as err:  # Ray Client lost the cluster ("not connected"); anything else fails again below
            if not self.remote:
                raise
            self._contact_error = f"{type(err).__name__}: {err}"[:300]
            self._await_contact(time.monotonic())  # ClusterLost after the grace
            ref = self.task_fn.remote(task, self.mailbox)  # the head answers: try once more
        ref.future().add_done_callback(lambda done: self._finished.put((done, out)))
        return out

    def _drain(self) -> None:
        """Write events as they come; settle a finished task only after the events it sent."""
        while True:
            finished = []
            try:
                finished.append(self._finished.get(timeout=0.1))
                while True:
                    finished.append(self._finished.get_nowait())
            except queue.Empty:
                pass
            self._pump()
            for done, out in finished:
                _settle(done, out)
            if self._closing.is_set() and not finished and self._finished.empty():
                return

    def _pump(self) -> None:
        try:
            events = self.ray.get(self.mailbox.take.remote(), timeout=30)
        except Exception as err:  # the mailbox is gone (cluster loss): its tasks fail too; check_alive decides
            self._contact_error = f"{type(err).__name__}: {err}"[:300]
            time.sleep(0.5)  # a failing call can fail fast: no busy loop
            return
        self._last_contact = time.monotonic()
        for event in events:
            self.on_event(event)

    def check_alive(self) -> None:
        """Raise ClusterLost once the head-node mailbox has not answered for the grace period."""
        silent_s = time.monotonic() - self._last_contact
        if self.remote and silent_s > self.grace_s:
            raise ClusterLost(
                f"lost the Ray cluster at {self.address!r}: its head has not answered for {silent_s:.0f}s "
                f"(grace {self.grace_s:g}s; last error: {self._contact_error or 'none, calls hung'}); finished "
                "partitions and ops are checkpointed: once the cluster runs again (or on a new one at "
                "ray_address / RAY_ADDRESS), resume this job with the same job id")

    def on_failure(self, err: BaseException) -> None:
        """A task that failed because the cluster is unreachable is not the partition's fault: wait
        for the head to answer again before it is retried, or give up with ClusterLost."""
        if self.remote:
            self._await_contact(time.monotonic())

    def _await_contact(self, since: float) -> None:
        while self._last_contact < since:
            self.check_alive()
            time.sleep(0.1)

    def request_stop(self) -> None:
        if not self._stop_sent:  # the driver repeats this every loop; one actor call is enough
            self._stop_sent = True
            self.mailbox.request_stop.remote()

    def describe(self) -> dict[str, Any]:
        """Where this run's Ray is, for job_summary.json: what a stopper needs to find it."""
        node = getattr(getattr(self.ray, "_private", None), "worker", None)
        node = getattr(node, "_global_node", None)
        session = node.get_session_dir_path() if node is not None and self.owns_ray and self.address == "local" else None
        return {"address": self.address, "started_local": self.owns_ray and self.address == "local",
                "session_dir": session, "pids": list(self.started_pids)}

    def ray_processes(self) -> set[int]:
        """Pids of the live processes of the local Ray this executor started (and their workers)."""
        pids = set(self.started_pids)
        for pid in self.started_pids:
            pids |= _descendants(pid)
        return {p for p in pids if psutil.pid_exists(p)}

    def shutdown(self, kill: bool = False) -> None:
        self._closing.set()
        self._drainer.join(timeout=10)  # let in-flight events land before the mailbox goes away
        if not self.owns_ray:
            return
        if self.address.startswith("ray://"):
            return _disconnect_client(self.ray, CLIENT_DISCONNECT_TIMEOUT_S)
        leftovers = _processes(self.ray_processes())  # taken before: psutil then never kills a reused pid
        self.ray.shutdown()
        _reap(leftovers, grace_s=0 if kill else 5)


def _disconnect_client(ray: Any, timeout_s: float) -> None:
    """ray.shutdown() of a Ray Client connection, bounded: on a cluster that does not answer
    (busy, stopping, gone) it would block the driver's exit until the kubelet's SIGKILL.
    Its threads are daemons, so a process that gives up waiting still exits; Ray's own
    exit hook, which would make the same wait, is taken off then."""
    closing = threading.Thread(target=ray.shutdown, name="dj-ray-disconnect", daemon=True)
    closing.start()
    closing.join(timeout_s)
    if closing.is_alive():
        atexit.unregister(ray.shutdown)
        logger.warning("the Ray Client connection did not close within {:g}s; the driver exits without waiting "
                       "for the cluster's answer", timeout_s)


def _signal_handlers() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore(handlers: dict[int, Any]) -> None:
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


class RemoteTraceback(Exception):
    """The worker-side traceback, chained under the worker's own exception (as concurrent.futures does)."""

    def __str__(self) -> str:
        return self.args[0]


def worker_error(err: BaseException) -> BaseException:
    """The exception the op raised, rather than Ray's wrapper around it, so that events and
    retry decisions read the same as with the local executor. Infrastructure errors
    (a killed worker, a lost node) have no cause and stay as they are."""
    cause = getattr(err, "cause", None)
    if not isinstance(cause, BaseException):
        return err
    if cause.__cause__ is None:
        cause.__cause__ = RemoteTraceback(getattr(err, "traceback_str", ""))
    return cause


def _settle(done: Future, out: Future) -> None:
    try:
        out.set_result(done.result())
    except BaseException as err:  # noqa: BLE001 - the worker's error is the partition's error
        out.set_exception(worker_error(err))


def _descendants(pid: Optional[int] = None) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _processes(pids: set[int]) -> list[psutil.Process]:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return procs


def _reap(procs: list[psutil.Process], grace_s: float) -> None:
    """Wait for Ray's own teardown, then SIGKILL whatever it left behind."""
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def ray_available() -> Optional[str]:
    try:
        import ray  # noqa: F401
    except ImportError:
        return "ray is not installed"
    return None
