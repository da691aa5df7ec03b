"""wait_for: the one way a test waits for state, with a deadline and a failure that says what it saw.

Tests never sleep a fixed time: they poll a probe until it returns something truthy."""
from __future__ import annotations

import subprocess
import time
from typing import Any, Callable, Optional, TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], Optional[T]], timeout: float, what: str, diagnose: Callable[[], str] = str, *,
             every: float = 0.2, ignore: tuple[type[BaseException], ...] = (),
             process: Optional[subprocess.Popen] = None) -> T:
    """Poll probe until it returns something truthy, and return that.

    Between polls it pauses `every` seconds, or as long as the probe took if that is longer (up
    to 1 s): a probe that runs kubectl then keeps at most half a core busy on a small machine.
    At the deadline, fail with `what`, the last value the probe returned (or the last exception
    listed in `ignore` it raised, e.g. a server still starting) and `diagnose()`. With `process`,
    fail as soon as that process exits, with its exit code and its stderr if it was piped."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        started = time.monotonic()
        try:
            last = probe()
        except ignore as err:
            last = err
        if last and not isinstance(last, BaseException):
            return last
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process exited ({process.returncode}) while waiting for {what}; "
                                 f"last seen: {_short(last)}{_detail(diagnose)}{_stderr(process)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {_short(last)}"
                                 f"{_detail(diagnose)}")
        time.sleep(max(every, min(time.monotonic() - started, 1.0)))


def _detail(diagnose: Callable[[], str]) -> str:
    text = diagnose()
    return f"\n{text}" if text else ""


def _short(value: Any, limit: int = 2000) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _stderr(process: subprocess.Popen) -> str:
    if process.stderr is None:
        return ""
    try:
        _, err = process.communicate(timeout=30)
    except (subprocess.TimeoutExpired, ValueError):
        return ""
    if isinstance(err, bytes):
        err = err.decode(errors="replace")
    return f"\nits stderr:\n{err[-3000:]}" if err else ""
