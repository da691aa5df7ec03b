"""dj-process: run (or resume) a recipe. Parse -> call the library -> report.

Exit codes: 0 completed, 1 unexpected error, 2 invalid recipe, 3 bad input,
4 job locked by a live run, 5 storage unavailable, 6 partitions failed after
retries, 130 stopped on request (resume with the same --job_id).

`kill -USR1 <pid>` prints every thread's stack to stderr without stopping the job.

With DJ_TERMINATION_MESSAGE_PATH set (the operator sets it to the container's
terminationMessagePath), the outcome is also written there as one JSON line: status,
exit code, a scrubbed one-line reason, and the final progress, so the final counts
reach the job's status even when no progress poll caught the driver running."""
from __future__ import annotations

import argparse
import faulthandler
import json
import os
import re
import signal
import sys
from typing import Optional

from loguru import logger

from ..config import load_recipe, parse_overrides
from ..version import add_version_flag
from ..errors import DJError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dj-process", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="recipe YAML (DataJuicer shape)")
    p.add_argument("--job_id", "--job-id", dest="job_id", help="job id; an existing job id resumes that job")
    p.add_argument("--progress-port", type=int, help="serve live progress JSON on this port")
    p.add_argument("--list-ops", action="store_true", help="list the available ops and exit")
    p.add_argument("--check-recipe", metavar="FILE",
                   help="report which keys and ops of a DataJuicer recipe are native, adapted or missing (and the "
                        "models they need), without running anything; exits 2 if the recipe cannot run")
    p.add_argument("--cleanup", action="store_true",
                   help="remove the intermediate data of finished jobs in work_dir past their own "
                        "max_retention_days, and exit")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return add_version_flag(p)


TERMINATION_ENV = "DJ_TERMINATION_MESSAGE_PATH"
TERMINATION_LIMIT = 4000  # kubelet keeps 4096 bytes of a termination message
_SECRETS = [(re.compile(r"(\w+://)[^/@\s]+@"), r"\1***@"),  # credentials in URLs
            (re.compile(r"(?i)((?:secret|password|token|key)[\w-]*\s*[=:]\s*)\S+"), r"\1***")]


def scrub(text: str, limit: int = 500) -> str:
    """One line, no credentials: the reason flows into the job's status and Events."""
    line = " ".join(str(text).split())
    for pattern, repl in _SECRETS:
        line = pattern.sub(repl, line)
    return line[:limit]


def write_termination_message(status: str, code: int, reason: Optional[str], recipe=None, outcome=None) -> None:
    path = os.environ.get(TERMINATION_ENV)
    if not path:
        return
    message: dict = {"status": status, "exit_code": code}
    if reason:
        message["reason"] = scrub(reason)
    if recipe is not None and outcome is not None:
        try:
            from ..jobs import read_summary
            from ..storage import Storage, StorageOptions
            summary = read_summary(Storage(StorageOptions.from_recipe(recipe)), outcome.paths)
            if summary is not None and isinstance(summary.progress, dict):
                message["progress"] = {**summary.progress, "current_ops": {}}
        except Exception as err:  # the message is a courtesy: never let it change the exit code
            logger.warning("no final progress for the termination message: {}", err)
    line = json.dumps(message, separators=(",", ":"))
    if len(line) > TERMINATION_LIMIT:
        message.pop("progress", None)
        line = json.dumps(message, separators=(",", ":"))
    try:
        with open(path, "w") as out:
            out.write(line + "\n")
    except OSError as err:
        logger.warning("cannot write the termination message to {}: {}", path, err)


def main(argv: Optional[list[str]] = None) -> int:
    args, rest = parser().parse_known_args(argv)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a stuck job can be diagnosed live
    logger.remove()
    logger.add(sys.stderr, level="WARNING" if args.quiet else "INFO", format="{time:HH:mm:ss} | {level: <7} | {message}",
               filter=lambda record: "dj_job" not in record["extra"])  # events.log has those
    try:
        if args.list_ops:
            from ..ops import registered_ops
            for name, cls in sorted(registered_ops().items()):
                print(f"{name:40s} {(cls.__doc__ or '').strip().splitlines()[0] if cls.__doc__ else ''}")
            return 0
        if args.check_recipe:
            from ..compat import check_recipe, render
            report = check_recipe(args.check_recipe, parse_overrides(rest))
            print(render(report, args.check_recipe), end="")
            return 0 if report.runnable else 2
        recipe = load_recipe(args.config, parse_overrides(rest))
        if args.cleanup:
            from ..retention import cleanup_old_jobs
            from ..storage import Storage, StorageOptions
            # Each job expires by the settings it ran with; this recipe's stand in for older summaries only.
            days = recipe.intermediate_storage.max_retention_days
            removed = cleanup_old_jobs(Storage(StorageOptions.from_recipe(recipe)), recipe.work_dir, default_days=days)
            for uri in removed:
                print(f"removed {uri}")
            print(f"removed intermediate data of {len(removed)} directories past their jobs' max_retention_days")
            return 0
        from ..display import run_with_display
        outcome = run_with_display(recipe, args.job_id, args.config, args.progress_port, quiet=args.quiet,
                                   overrides=rest)
    except DJError as err:
        logger.error("{}: {}", type(err).__name__, err)
        write_termination_message("failed", err.exit_code, f"{type(err).__name__}: {err}")
        return err.exit_code
    if outcome.status == "completed":
        out = outcome.export["path"] if outcome.export else "(no export_path)"
        print(f"job {outcome.job_id} completed: {outcome.export['rows'] if outcome.export else 0} rows -> {out}")
    else:
        print(f"job {outcome.job_id} {outcome.status}: {outcome.error}", file=sys.stderr)
    write_termination_message(outcome.status, outcome.exit_code, outcome.error, recipe, outcome)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
