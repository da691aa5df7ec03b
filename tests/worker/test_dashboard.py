"""The job dashboard in a real browser (Debian's headless Chromium driven by Selenium), and /metrics.

One slow job (a flaky op makes two partitions retry) is watched live through its driver, then
shown finished by `dj-monitor --web`; a second job is SIGKILLed and shown interrupted."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.engine import REPO, env_with, event_types, events, events_so_far, make_recipe, start_dj_process, \
    summary, wait_exit
from tests.support.wait import wait_for

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("DJ_TEST_ARTIFACTS", REPO / "test-artifacts"))
SLOW_OPS = [{"slow_mapper": {"seconds": 0.6}}, {"clean_email_mapper": {}}, {"whitespace_normalization_mapper": {}},
            {"text_length_filter": {"min_len": 100, "max_len": 600}}]

NOT_YET = (Exception,)  # what a probe raises while a server is still starting or an element is not drawn yet
pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                                reason="needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch a browser or driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1500",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def console_errors(driver) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def open_page(driver, url: str) -> None:
    """Load url with an empty console log (reading the log drains it)."""
    driver.get("about:blank")
    driver.get_log("browser")
    driver.get(url)


def text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def page_updated_after(driver, ms: float) -> bool:
    return float(driver.execute_script("return document.body.dataset.updated || 0")) > ms


@pytest.fixture(scope="module")
def slow_job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    recipe = make_recipe(tmp, rows=2000, partition={"size": 50},
                         process=[*SLOW_OPS[:1], {"flaky_mapper": {"state_dir": str(tmp / "flaky"), "failures": 1,
                                                                   "first_ids": [0, 100]}}, *SLOW_OPS[1:]],
                         checkpoint={"strategy": "every_op"}, event_logging={"resource_usage_interval_s": 0.5})
    return tmp, recipe, "dash-live"


class WebMonitor:
    """`dj-monitor --web` for one job, as a user starts it."""

    def __init__(self, tmp: Path, job_id: str):
        self.port = free_port()
        cmd = [sys.executable, "-m", "djworker.cli.monitor", job_id, "--base-dir", str(tmp / "jobs"), "--web",
               "--port", str(self.port)]
        # Ctrl-C as at a terminal: a test run started in the background (`cmd &`) inherits SIGINT
        # ignored, and Python then never turns it into KeyboardInterrupt
        self.proc = subprocess.Popen(cmd, env=env_with(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        line = self.proc.stdout.readline()
        assert f"http://127.0.0.1:{self.port}/" in line, (line, self.proc.stderr.read() if self.proc.poll() else "")
        self.url = f"http://127.0.0.1:{self.port}/"

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(timeout=30) == 130


def test_live_dashboard_follows_the_driver(browser, slow_job):
    tmp, recipe, job_id = slow_job
    port = free_port()
    proc = start_dj_process(recipe, job_id, "--progress-port", str(port))
    base = f"http://127.0.0.1:{port}/"
    try:
        total = 40
        wait_for(lambda: (lambda p: 3 <= p["partitions"]["completed"] <= 12)(orjson.loads(get(base + "progress"))),
                 90, "a job with some partitions done and some pending", ignore=NOT_YET)
        open_page(browser, base)
        wait_for(lambda: len(browser.find_elements("css selector", "#grid rect")) == total, 60, "the grid drawn",
                 ignore=NOT_YET)

        before_ms = time.time() * 1000
        before = orjson.loads(get(base + "progress"))
        wait_for(lambda: page_updated_after(browser, before_ms), 20, "a poll after /progress was read", every=0.05,
                 ignore=NOT_YET)
        shown = {"percent": float(text(browser, "percent").rstrip("%")), "done": int(text(browser, "p-done")),
                 "total": int(text(browser, "p-total")), "status": text(browser, "status").lower(),
                 "states": [r.get_attribute("class") for r in browser.find_elements("css selector", "#grid rect")]}
        after = orjson.loads(get(base + "progress"))
        assert shown["status"] == "running" == before["status"]
        assert before["progress_percent"] - 0.05 <= shown["percent"] <= after["progress_percent"] + 0.05
        assert before["partitions"]["completed"] <= shown["done"] <= after["partitions"]["completed"]
        plan = orjson.loads((tmp / "jobs" / job_id / "metadata" / "dataset_mapping.json").read_bytes())
        assert shown["total"] == len(plan["partitions"]) == len(shown["states"]) == total
        assert "st-d" in shown["states"] and "st-p" in shown["states"], shown["states"]
        assert shown["states"].count("st-d") <= after["partitions"]["completed"]

        # The driver's /metrics: Prometheus text, one series per state, none per partition.
        from prometheus_client.parser import text_string_to_metric_families
        scraped = {f.name: f for f in text_string_to_metric_families(get(base + "metrics").decode())}
        assert sum(s.value for s in scraped["dj_partitions"].samples) == total
        assert len(scraped["dj_partitions"].samples) == 6
        assert 0 < scraped["dj_rows_processed"].samples[0].value < 2000

        # The tooltip of a finished partition gives its rows in/out and last checkpoint.
        from selenium.webdriver.common.action_chains import ActionChains
        done_cell = browser.find_elements("css selector", "#grid rect.st-d")[0]
        ActionChains(browser).move_to_element(done_cell).perform()
        tip = wait_for(lambda: text(browser, "tip"), 10, "the tooltip", ignore=NOT_YET)
        pid = done_cell.get_attribute("data-pid")
        assert f"partition {pid}: done" in tip and "rows in 50" in tip and "last checkpoint: after text_length_filter" in tip

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        ActionChains(browser).move_to_element(browser.find_element("id", "job-id")).perform()  # no tooltip in the picture
        # Wait for the resource chart to have samples, so the picture shows every panel.
        wait_for(lambda: browser.find_elements("css selector", "#resources polyline"), 30, "resource samples",
                 ignore=NOT_YET)
        browser.save_screenshot(str(ARTIFACTS / "dashboard-running.png"))
        assert console_errors(browser) == []
        browser.get("about:blank")  # the driver's server goes when the job ends: no failed polls logged
    finally:
        code = wait_exit(proc, 240)
    assert code == 0, proc.stderr.read()


def test_finished_job_funnel_equals_the_summary(browser, slow_job):
    tmp, _, job_id = slow_job
    done = summary(tmp, job_id)
    assert done["status"] == "completed"  # the previous test ran it
    web = WebMonitor(tmp, job_id)
    try:
        open_page(browser, web.url)
        wait_for(lambda: text(browser, "status").lower() == "completed", 60, "the completed status", ignore=NOT_YET)
        steps = [(s.get_attribute("data-label"), int(s.get_attribute("data-rows")))
                 for s in browser.find_elements("css selector", "#funnel g.step")]
        assert [label for label, _ in steps] == ["input", "slow_mapper", "flaky_mapper", "clean_email_mapper",
                                                 "whitespace_normalization_mapper", "text_length_filter"]
        assert steps[0][1] == done["progress"]["samples"]["total"] == done["performance"]["rows_in"]
        assert steps[-1][1] == done["performance"]["rows_out"] == done["export"]["rows"]
        assert all(rows == steps[0][1] for _, rows in steps[:-1])  # only the filter drops rows
        assert int(text(browser, "s-kept").replace(",", "")) == done["performance"]["rows_out"]
        # The two partitions that failed once show up as retried warnings.
        kinds = [p.get_attribute("data-type") for p in browser.find_elements("css selector", "#problems .problem")]
        assert kinds.count("PARTITION_FAILED") == 2, kinds
        assert console_errors(browser) == []

        from prometheus_client.parser import text_string_to_metric_families
        families = {f.name: f for f in text_string_to_metric_families(get(web.url + "metrics").decode())}
        value = {(f.name, s.name, tuple(sorted(s.labels.items()))): s.value
                 for f in families.values() for s in f.samples}

        def one(name: str, sample: str, **labels: str) -> float:
            return value[(name, sample, tuple(sorted({"job_id": job_id, **labels}.items())))]

        assert one("dj_rows_processed", "dj_rows_processed_total") == done["performance"]["rows_in"]
        assert one("dj_rows_kept", "dj_rows_kept_total") == done["performance"]["rows_out"]
        assert one("dj_partitions", "dj_partitions", state="done") == done["progress"]["partitions"]["total"] == 40
        assert one("dj_partitions", "dj_partitions", state="pending") == 0
        assert one("dj_partition_retries", "dj_partition_retries_total") == done["performance"]["retries"] == 2
        saves = sum(v for (n, _, _), v in value.items() if n == "dj_checkpoint_saves")
        assert saves == done["performance"]["checkpoint_saves"]
        evs = events(tmp, job_id)
        for op in ("slow_mapper", "text_length_filter"):
            spent = sum(e["duration_s"] for e in evs if e["event_type"] == "OP_COMPLETE" and e["op_name"] == op)
            assert one("dj_op_seconds", "dj_op_seconds_total", op=op) == pytest.approx(spent, abs=1e-3)
        assert {k for s in families["dj_op_seconds"].samples for k in s.labels} == {"job_id", "op"}
    finally:
        browser.get("about:blank")  # stop polling before the server goes
        web.close()


def test_killed_job_shows_interrupted_with_the_resume_command(browser, tmp_path):
    recipe = make_recipe(tmp_path, rows=1000, partition={"size": 50}, process=SLOW_OPS)
    job_id = "dash-killed"
    proc = start_dj_process(recipe, job_id)
    try:
        wait_for(lambda: "PARTITION_COMPLETE" in event_types(events_so_far(tmp_path, job_id)), 90, "a partition done")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    web = WebMonitor(tmp_path, job_id)
    try:
        open_page(browser, web.url)
        wait_for(lambda: text(browser, "status").lower() == "interrupted", 60, "the interrupted status",
                 ignore=NOT_YET)
        command = text(browser, "resume-command")
        assert command == summary(tmp_path, job_id)["resumption_command"]
        assert command.startswith("dj-process --config ") and f"--job_id {job_id}" in command
        assert text(browser, "eta") == "-"
        assert browser.find_elements("css selector", "#grid rect.st-d")
        assert not browser.find_elements("css selector", "#grid rect.st-r")  # nothing runs once the driver died
        assert console_errors(browser) == []
    finally:
        browser.get("about:blank")  # stop polling before the server goes
        web.close()


def test_dj_monitor_web_on_an_unknown_job_says_where_it_looked(tmp_path):
    out = subprocess.run([sys.executable, "-m", "djworker.cli.monitor", "nope", "--base-dir", str(tmp_path), "--web",
                          "--port", str(free_port())], env=env_with(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "job nope not found" in out.stderr and "--base-dir" in out.stderr


def test_grid_stays_usable_at_10k_partitions(browser):
    """A 10k-partition job's data, served as the driver serves it: every partition has its cell and tooltip."""
    from djworker.dashboard.server import routes
    from djworker.dashboard.view import dashboard, timeline
    from djworker.progress import compact, progress as fold_events
    from djworker.progress_server import serve

    n, t0 = 10_000, time.time() - 100
    plan = {"total_samples": n * 10, "partitions": [{"partition_id": i, "sample_count": 10} for i in range(n)]}
    evs = [{"event_type": "JOB_START", "job_id": "big", "timestamp": t0}]
    for i in range(n // 2):
        evs += [{"event_type": "PARTITION_START", "partition_id": i, "timestamp": t0 + i / 100},
                {"event_type": "PARTITION_COMPLETE", "partition_id": i, "rows_in": 10, "rows_out": 9,
                 "timestamp": t0 + i / 100}]
    progress = fold_events(evs, plan, t0 + 100)
    data = dashboard({**progress.model_dump(), "job_overview": {}}, timeline(evs), t0 + 100)

    class FixedView:  # what JobView would read from a real job's files
        def data(self) -> dict[str, Any]:
            return data

    port = free_port()
    server = serve(port, lambda: compact(progress), host="127.0.0.1", routes=routes(FixedView()))
    try:
        open_page(browser, f"http://127.0.0.1:{port}/")
        wait_for(lambda: browser.execute_script("return document.querySelectorAll('#grid rect').length") == n, 60,
                 "10k cells", ignore=NOT_YET)
        classes = browser.execute_script(
            "return Array.from(document.querySelectorAll('#grid rect'), (r) => r.getAttribute('class')).join(',')")
        assert classes.split(",") == ["st-d"] * (n // 2) + ["st-p"] * (n // 2)
        height = browser.execute_script("return document.getElementById('grid').getBoundingClientRect().height")
        assert height < 600  # the grid fits on a screen, cells shrink instead
        from selenium.webdriver.common.action_chains import ActionChains
        ActionChains(browser).move_to_element(browser.find_elements("css selector", "#grid rect")[n - 1]).perform()
        tip = wait_for(lambda: text(browser, "tip"), 10, "the last cell's tooltip", ignore=NOT_YET)
        assert tip.startswith(f"partition {n - 1}: pending")
        assert console_errors(browser) == []
        browser.get("about:blank")
    finally:
        server.shutdown()
