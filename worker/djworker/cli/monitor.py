"""dj-monitor: show a job's progress. Parse -> read the job -> render with rich.

Exit codes: 0 shown, 1 job not found or unreadable, 130 interrupted (Ctrl-C)."""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import Any, Optional

import orjson
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..errors import DJError
from ..jobs import DEFAULT_WORK_DIR
from ..jobs.monitor import JobProgressMonitor, is_finished

STYLE = {"completed": "green", "running": "cyan", "processing": "cyan", "failed": "red", "stopped": "yellow",
         "interrupted": "magenta", "pending": "dim"}
ICON = {"completed": "✅", "processing": "🔄", "failed": "❌", "pending": "⏳"}
MAX_ROWS = 40  # partitions listed without --detailed; the rest are summarised


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
    return p


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


def watch(monitor: JobProgressMonitor, interval: float, detailed: bool = False,
          console: Optional[Console] = None) -> dict[str, Any]:
    """Redraw in place (rich Live, no `clear`) until the job ends; a pipe gets one frame per update."""
    console = console or Console()
    data = monitor.get_progress_data(detailed)
    if not console.is_terminal:
        while True:
            console.print(render(data, detailed))
            if is_finished(data):
                return data
            time.sleep(interval)
            data = monitor.get_progress_data(detailed)
    with Live(render(data, detailed), console=console, auto_refresh=False) as live:
        while not is_finished(data):
            time.sleep(interval)
            data = monitor.get_progress_data(detailed)
            live.update(render(data, detailed), refresh=True)
    return data


# ---- rendering ----------------------------------------------------------------
def render(data: dict[str, Any], detailed: bool = False) -> RenderableType:
    parts: list[RenderableType] = [overview(data), overall(data), partitions(data, detailed)]
    if detailed:
        parts.append(operations(data))
    parts.append(checkpoints(data))
    return Group(*parts)


def _status(status: Optional[str]) -> Text:
    status = status or "unknown"
    return Text(status.upper(), style=f"bold {STYLE.get(status, '')}".strip())


def _when(ts: Optional[float]) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m{rem % 60:02d}s" if h else f"{rem // 60}m{rem % 60:02d}s"


def _num(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else ("-" if n is None else str(n))


def overview(data: dict[str, Any]) -> RenderableType:
    o, v = data["overall_progress"], data["job_overview"]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    driver = v["driver"]
    rows = [("Status", _status(o["job_status"])), ("Dataset", v.get("dataset_path") or "-"),
            ("Total samples", _num(o["samples"]["total"])),
            ("Partitions", f"{o['partitions']['total']} x {_num(v.get('partition_size'))} samples"),
            ("Executor", f"{v.get('executor_type') or '-'} (checkpoints: {v.get('checkpoint_strategy') or '-'})"),
            ("Started", f"{_when(v.get('start_time'))} (attempt {v.get('attempts') or 1})"),
            ("Elapsed", _duration(o["elapsed_time_seconds"])),
            ("ETA", _duration(o["eta_seconds"]) if o["eta_seconds"] is not None else "-"),
            ("Driver", f"pid {driver['pid']} on {driver['host']}: {driver['state']}" if driver["pid"] else "-"),
            ("Event log", v.get("event_log_dir") or "-")]
    usage, perf = data.get("resource_usage"), data.get("performance")
    if usage and o["job_status"] == "running":
        cpu = f", CPU {usage['cpu_percent']:.0f}%" if usage.get("cpu_percent") is not None else ""
        rows.append(("Resources", f"RSS {usage['rss_mb']:,.0f} MB (peak {usage['peak_rss_mb']:,.0f} MB){cpu}, "
                                  f"{usage['processes']} processes, at {usage['time'][11:19]}"))
    if perf and o["job_status"] != "running":
        rows.append(("Last run", f"{perf['rows_per_s']:,.0f} rows/s, {_num(perf['rows_in'])} rows in "
                                 f"{_duration(perf['wall_s'])}, {perf['checkpoint_saves']} checkpoints saved"))
    if v.get("error") and o["job_status"] in ("failed", "interrupted"):
        rows.append(("Error", Text(str(v["error"]), style="red")))
    if o["job_status"] in ("failed", "stopped", "interrupted") and v.get("resumption_command"):
        rows.append(("Resume", v["resumption_command"]))
    for key, value in rows:
        grid.add_row(key, value)
    return Panel(grid, title=f"DataJuicer job {data['job_id']}", title_align="left")


def overall(data: dict[str, Any]) -> RenderableType:
    o = data["overall_progress"]
    p, s = o["partitions"], o["samples"]
    bar = ProgressBar(total=100.0, completed=o["progress_percentage"], width=40)
    line = Text(f"  {o['progress_percentage']:.1f}% ({p['completed']}/{p['total']} partitions)")
    counts = Text.assemble(("completed ", ""), (str(p["completed"]), "green"), (", processing ", ""),
                           (str(p["processing"]), "cyan"), (", failed ", ""), (str(p["failed"]), "red"),
                           (", pending ", ""), (str(p["pending"]), "dim"))
    samples = f"samples {_num(s['processed'])}/{_num(s['total'])} processed, {_num(s['output'])} kept"
    if s.get("rejected"):
        samples += f", {_num(s['rejected'])} malformed rejected"
    return Panel(Group(_row(bar, line), counts, Text(samples)),
                 title="Overall progress", title_align="left")


def _row(*cells: RenderableType) -> Table:
    grid = Table.grid()
    for cell in cells:
        grid.add_column()
    grid.add_row(*cells)
    return grid


def partitions(data: dict[str, Any], detailed: bool) -> RenderableType:
    n_ops = len(data["job_overview"].get("ops") or [])
    items = list(data["partition_status"].items())
    with_errors = any(p["error"] for _, p in items)
    table = Table(title="Partitions", title_justify="left")
    for col in ("#", "status", "samples", "kept", "current op", "ops", "ckpts", "retries") + (("error",) * with_errors):
        right = col in ("#", "samples", "kept", "ops", "ckpts", "retries")
        table.add_column(col, justify="right" if right else "left", no_wrap=col != "error",
                         overflow="ellipsis", max_width=30 if col == "current op" else None)
    shown = items if detailed or len(items) <= MAX_ROWS else \
        [kv for kv in items if kv[1]["status"] in ("processing", "failed")][:MAX_ROWS]
    for pid, p in shown:
        done = f"{p['ops_completed']}/{n_ops}" if n_ops else str(p["ops_completed"])
        row = [pid, Text(f"{ICON.get(p['status'], '')} {p['status']}", style=STYLE.get(p["status"], "")),
               _num(p["samples"]), _num(p["output_samples"]), p["current_op"] or "-", done,
               str(p["checkpoints_saved"]), str(p["retries"])]
        table.add_row(*row, *([(p["error"] or "")[:200]] * with_errors))
    if len(shown) < len(items):
        table.caption = f"{len(items) - len(shown)} completed/pending partitions not listed (use --detailed)"
    return table


def _metric_table(title: str, first: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column(first, justify="right", no_wrap=True)
    table.add_column("op", no_wrap=True, overflow="ellipsis", max_width=24)
    for col in ("time", "in", "out", "rows/s", "reduced"):
        table.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    return table


def _metric_cells(m: dict[str, Any]) -> list[str]:
    rate = m["throughput_rows_s"]
    return [f"{m['duration_s']:.2f}s", _num(m["rows_in"]), _num(m["rows_out"]), f"{rate:,.0f}" if rate else "-",
            f"{100 * m['reduction_ratio']:.1f}%"]


def operations(data: dict[str, Any]) -> RenderableType:
    table = _metric_table("Operations (all partitions)", "parts")
    for op in data["operation_summary"]:
        table.add_row(str(op["partitions"]), op["op_name"], *_metric_cells(op))
    per = _metric_table("Operations per partition", "part")
    for m in data.get("operation_metrics", []):
        per.add_row(str(m["partition_id"]), m["op_name"], *_metric_cells(m))
    return Group(table, per)


def checkpoints(data: dict[str, Any]) -> RenderableType:
    c = data["checkpoint_summary"]
    last = c["last"]
    text = f"total checkpoints saved: {c['total']}"
    if last:
        text += f"\nlast: partition {last['partition_id']} after op {last['op_idx']} ({last['op_name']}) " \
                f"at {_when(last.get('timestamp'))}\n      {last.get('path') or ''}"
    return Panel(text, title="Checkpoints", title_align="left")


if __name__ == "__main__":
    sys.exit(main())
