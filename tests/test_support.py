"""The shared test helpers fail the way they promise: wait_for names what it waited for and what it
last saw, and JobFiles reads a job's files where JobPaths puts them, torn lines included."""
from __future__ import annotations

import subprocess
import sys

import orjson
import pyarrow as pa
import pytest

from djworker.checkpoint import Checkpoints
from djworker.events import EventLog
from djworker.storage import Storage
from tests.support.artifacts import TORN, JobFiles
from tests.support.chaos import late_worker_events
from tests.support.wait import wait_for


def test_wait_for_returns_the_first_truthy_value():
    polls = iter([None, [], {"phase": "Running"}])
    assert wait_for(lambda: next(polls), 5, "the job", every=0.01) == {"phase": "Running"}


def test_wait_for_fails_naming_what_it_waited_for_and_the_last_value_seen():
    with pytest.raises(AssertionError) as err:
        wait_for(lambda: [], 0.05, "the job to run", lambda: "pod events: none", every=0.01)
    assert "waiting for the job to run; last seen: []" in str(err.value) and "pod events: none" in str(err.value)


def test_wait_for_retries_through_the_exceptions_it_is_told_to_ignore_and_reports_the_last():
    def probe():
        raise ConnectionRefusedError("not up yet")

    with pytest.raises(AssertionError, match="not up yet"):
        wait_for(probe, 0.05, "the server", every=0.01, ignore=(OSError,))
    with pytest.raises(ConnectionRefusedError):
        wait_for(probe, 0.05, "the server", every=0.01)


def test_wait_for_stops_at_once_when_the_process_it_depends_on_exits():
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stderr.write('no config'); sys.exit(3)"],
                            stderr=subprocess.PIPE, text=True)
    with pytest.raises(AssertionError, match=r"exited \(3\) while waiting for a partition(.|\n)*no config"):
        wait_for(lambda: False, 60, "a partition", process=proc)


def test_job_files_read_the_event_log_across_rotations_and_name_a_torn_line(tmp_path):
    job = JobFiles.of("j", tmp_path / "work", tmp_path / "events")
    assert job.events() == [] and job.events_so_far() == []  # no log yet
    log = EventLog(job.paths.event_dir, "j", max_log_size_mb=0.002, backup_count=50)
    for i in range(100):
        log.emit("INFO", message=f"event {i}")
    log.close()
    assert [e["message"] for e in job.events()] == [f"event {i}" for i in range(100)]
    with open(job.paths.events_file, "ab") as fh:
        fh.write(b'{"event_type": "JOB_COMPL')  # a writer killed mid-line
    with pytest.raises(AssertionError, match=r"events\.jsonl:\d+ is not a JSON event"):
        job.events()
    assert job.events(torn="mark")[-1] == {"event_type": TORN}
    assert len(job.events_so_far()) == 100


def test_job_files_find_summary_plan_and_checkpoints_where_the_driver_writes_them(tmp_path):
    job = JobFiles.of("j", tmp_path / "work", checkpoint_dir=tmp_path / "ckpt")
    assert job.plan() is None and job.report() is None and job.checkpointed_ops() == {}
    job.summary_path.parent.mkdir(parents=True)
    job.summary_path.write_bytes(orjson.dumps({"status": "completed"}))
    assert job.summary() == {"status": "completed"}
    store = Checkpoints(Storage(), job.paths.checkpoint_root)
    for pid, upto in ((0, 2), (0, 4), (3, 2)):
        store.write(f"partition_{pid:06d}_op{upto:03d}_f_h", pa.table({"text": ["a"]}), pid, upto, ["a"] * upto)
    assert job.checkpointed_ops() == {0: {2, 4}, 3: {2}}
    assert all(m["rows"] == 1 for m in job.checkpoints())


def test_late_worker_events_names_a_partitions_event_logged_after_its_completion():
    def ev(kind, pid=None):
        return {"event_type": kind, "partition_id": pid}

    ordered = [ev("JOB_START"), ev("PARTITION_START", 0), ev("OP_COMPLETE", 0), ev("PARTITION_COMPLETE", 0)]
    assert late_worker_events(ordered) == []
    assert late_worker_events([*ordered, ev("OP_COMPLETE", 0)]) == [
        "partition 0: OP_COMPLETE written after its PARTITION_COMPLETE"]
    assert late_worker_events([*ordered, ev("JOB_RESUMED"), ev("PARTITION_START", 0)]) == []  # a new run
