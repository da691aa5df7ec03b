"""dj-monitor: show a job's progress. Parse -> read the job -> render with rich.

Exit codes: 0 shown, 1 job not found or unreadable, 130 interrupted (Ctrl-C)."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

import orjson

from ..errors import DJError
from ..version import add_version_flag
from ..jobs import DEFAULT_WORK_DIR
from ..jobs.monitor import JobProgressMonitor, is_finished
from ..jobs.render import watch


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dj-monitor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("job_id", help="the job to show")
    p.add_argument("--base-dir", "--base_dir", dest="base_dir", default=DEFAULT_WORK_DIR,
                   help="the recipe's work_dir holding {job_id}/ (default %(default)s)")
    p.add_argument("--detailed", action="store_true", help="add per-op metrics and every partition")
    p.add_argument("--watch", action="store_true", help="redraw until the job ends")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between redraws (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the data as JSON (one line per update with --watch)")
    p.add_argument("--web", action="store_true", help="serve the job's live dashboard in the browser until Ctrl-C")
    p.add_argument("--port", type=int, default=8266, help="the dashboard's port with --web (default %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on with --web (default %(default)s)")
    return add_version_flag(p)


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    args.interval = max(args.interval, 0.1)
    monitor = JobProgressMonitor(args.job_id, args.base_dir)
    try:
        if args.web:
            return web(args)
        if args.json:
            emit_json(monitor, args)
        elif args.watch:
            watch(monitor, args.interval, args.detailed)
        else:
            monitor.display_progress(args.detailed)
    except DJError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


def web(args: argparse.Namespace) -> int:
    from ..dashboard.server import serve_job

    try:
        server = serve_job(args.job_id, args.base_dir, args.port, args.host)
    except OSError as err:
        print(f"cannot serve the dashboard on {args.host}:{args.port}: {err}; pass another --port", file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    print(f"dashboard of job {args.job_id}: http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.shutdown()


def emit_json(monitor: JobProgressMonitor, args: argparse.Namespace) -> None:
    while True:
        data = monitor.get_progress_data(args.detailed)
        option = 0 if args.watch else orjson.OPT_INDENT_2
        sys.stdout.write(orjson.dumps(data, option=option, default=str).decode() + "\n")
        sys.stdout.flush()
        if not args.watch or is_finished(data):
            return
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
