"""dj-stop: stop a running job (cooperatively, then by force), or list running jobs.

The driver is asked first (STOP file + SIGTERM): it checkpoints in-flight partitions,
records JOB_STOPPED and `status: stopped`, and the job resumes with the same --job_id.
After --timeout seconds (at once with --force) the driver's whole process tree is
killed. The driver is identified by pid + start time + host: a reused pid or a job
on another host is never signalled.

Exit codes: 0 stopped, 1 job not found, 2 not running (nothing signalled),
3 refused or not confirmed (another host), 4 processes survived the kill."""
from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any, Optional

import orjson
from loguru import logger
from rich.console import Console
from rich.table import Table

from ..jobs import DEFAULT_WORK_DIR
from ..version import add_version_flag
from ..jobs.common import list_running_jobs
from ..jobs.stopper import JobStopper, stop_job

EXIT = {"stopped": 0, "killed": 0, "not_found": 1, "not_running": 2, "refused": 3, "requested": 3}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dj-stop", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job_id", nargs="?", help="the job to stop (omit with --list)")
    p.add_argument("--base-dir", "--base_dir", dest="base_dir", default=DEFAULT_WORK_DIR,
                   help="the recipe's work_dir holding {job_id}/ (default %(default)s)")
    p.add_argument("--force", action="store_true", help="kill at once (SIGKILL), skipping the cooperative stop")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for a cooperative stop before killing (default %(default)s)")
    p.add_argument("--list", action="store_true", help="list the running jobs under --base-dir and exit")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return add_version_flag(p)


def main(argv: Optional[list[str]] = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    logger.remove()  # a stop the stopper records goes to events.log, not to the terminal twice
    logger.add(sys.stderr, level="WARNING", filter=lambda record: "dj_job" not in record["extra"])
    if args.list:
        jobs = list_running_jobs(args.base_dir)
        if args.json:
            print(orjson.dumps(jobs, option=orjson.OPT_INDENT_2).decode())
        else:
            print_jobs(jobs, args.base_dir)
        return 0
    if not args.job_id:
        p.error("a job_id is required unless --list is given")
    if not args.json and JobStopper(args.job_id, args.base_dir).is_job_running():
        how = "killing it now" if args.force else f"asking it to stop; killing it after {args.timeout:g}s"
        print(f"job {args.job_id} is running: {how}...", file=sys.stderr)
    result = stop_job(args.job_id, force=args.force, timeout=args.timeout, base_dir=args.base_dir)
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(result["message"], file=sys.stdout if result["success"] else sys.stderr)
    if result["remaining"]:
        return 4
    return EXIT[result["outcome"]]


def print_jobs(jobs: list[dict[str, Any]], base_dir: str) -> None:
    console = Console()
    if not jobs:
        console.print(f"no running jobs under {base_dir}")
        return
    table = Table(title=f"Running jobs under {base_dir}", title_justify="left")
    for col in ("job id", "pid", "host", "started", "progress", "partitions", "eta"):
        table.add_column(col, justify="right" if col in ("pid", "progress", "eta") else "left")
    for job in jobs:
        p = job["partitions"]
        started = datetime.fromtimestamp(job["start_time"]).strftime("%Y-%m-%d %H:%M:%S") if job["start_time"] else "-"
        eta = f"{job['eta_seconds']:.0f}s" if job["eta_seconds"] is not None else "-"
        table.add_row(job["job_id"], str(job["pid"]), job["host"] or "-", started, f"{job['progress_percentage']:.1f}%",
                      f"{p['completed']}/{p['total']} done, {p['failed']} failed", eta)
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
