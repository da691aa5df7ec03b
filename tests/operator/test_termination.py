"""A driver's outcome reaches the status through its termination message, even when no
progress poll ever caught it running (a job that finishes between two polls)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from djoperator.crd import parse_status
from djoperator.observe import pod_state, termination_message
from djoperator.observed import scrub
from djoperator.status import next_status
from djworker.demo_data import write_jsonl

from .factories import SETTINGS, observed

REPO = Path(__file__).resolve().parents[2]


def run_dj_process(tmp: Path, process: list, rows: int = 30) -> tuple[int, str]:
    write_jsonl(str(tmp / "data.jsonl"), rows)
    recipe = {"dataset_path": str(tmp / "data.jsonl"), "export_path": str(tmp / "out.jsonl"), "np": 1,
              "work_dir": str(tmp / "w"), "event_log_dir": str(tmp / "events"), "checkpoint_dir": str(tmp / "ckpt"),
              "partition": {"size": 10}, "process": process}
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(REPO), "HOME": str(tmp),
           "DJ_TERMINATION_MESSAGE_PATH": str(tmp / "termination-log")}
    done = subprocess.run(["dj-process", "--config", str(tmp / "recipe.yaml"), "--job_id", "t", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp)
    return done.returncode, (tmp / "termination-log").read_text() if (tmp / "termination-log").exists() else ""


def terminated_pod(code: int, message: str) -> dict:
    return {"metadata": {"name": "demo-driver-1", "labels": {"datajuicer.io/attempt": "1"}},
            "status": {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [
                {"name": "driver", "state": {"terminated": {"exitCode": code, "message": message}}}]}}


def test_a_job_finished_between_polls_gets_its_final_counts_from_the_termination_message(tmp_path):
    code, message = run_dj_process(tmp_path, [{"whitespace_normalization_mapper": {}}])
    assert code == 0 and len(message.strip().splitlines()) == 1
    pod = pod_state(terminated_pod(code, message))
    # the last status a poll saw: the pod was still Pending, no counts at all
    d = next_status(observed("Provisioning", pods=(pod,), attempt=1, children={"driverPod": "demo-driver-1"}),
                    SETTINGS)
    st = parse_status(d.status)
    assert st.phase == "Succeeded"
    assert st.partitions["total"] == 3 and st.partitions["completed"] == 3
    assert st.progress["partitionsDone"] == "3/3" and st.samples["total"] == 30


def test_a_failing_driver_writes_a_scrubbed_one_line_reason(tmp_path):
    code, message = run_dj_process(tmp_path, [{"text_length_filter": {"min_length": 5}}])
    assert code == 2
    data = json.loads(message)
    assert data["exit_code"] == 2 and "min_length" in data["reason"] and "\n" not in data["reason"]
    reason, _ = termination_message({"message": message})
    assert "min_length" in reason


def test_scrub_removes_credentials_and_newlines():
    text = "cannot open s3://AKIA:sekrit@bucket/x\n  aws_secret_access_key=abc123 failed"
    out = scrub(text)
    assert "sekrit" not in out and "abc123" not in out and "\n" not in out and "bucket/x" in out


def test_log_tail_fallback_gives_its_last_line_and_no_progress():
    reason, progress = termination_message({"message": "Traceback...\n  File x\nMemoryError: out of memory"})
    assert reason == "MemoryError: out of memory" and progress is None
    assert termination_message({"reason": "OOMKilled"}) == ("OOMKilled", None)
    assert termination_message({"reason": "Error"}) == (None, None)
