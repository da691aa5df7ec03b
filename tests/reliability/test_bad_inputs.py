"""A catalogue of bad inputs: each gets a clear error (what is wrong, and what to do) or a clean
rejection, the documented exit code, and loses nothing.

Every case asserts three things: the exit code (README 'Exit codes'), that the message names the
problem and the fix, and what was preserved (checkpoints byte for byte, rejects written, the
summary's status and error, a JOB_FAILED event). Recipe mistakes are made against a job that was
killed half way, so 'preserved' means its checkpoints, summary and event log did not change and
it still resumes to the right output (the last recipe test)."""
from __future__ import annotations

import gzip
import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.reliability.conftest import remount
from tests.support.engine import (dj_process, env_with, event_types, events, events_so_far, job_files, make_recipe,
                                  output_rows, start_dj_process, summary)
from tests.support.engine import expected_rows, wait_exit
from tests.support.wait import wait_for

JOB = "j"


# ---- helpers --------------------------------------------------------------------
def checksums(*roots: Path) -> dict[str, str]:
    """Every file under the roots, as path -> sha256: what 'untouched' means."""
    out = {}
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def job_state(tmp: Path) -> dict[str, str]:
    return checksums(tmp / "ckpt", tmp / "jobs", tmp / "events")


def said(proc: subprocess.CompletedProcess, *phrases: str) -> None:
    """The user-facing output names every phrase (problem and fix)."""
    text = proc.stderr + proc.stdout
    missing = [p for p in phrases if p not in text]
    assert not missing, f"{missing} not in output:\n{text[-3000:]}"


def failed_with(tmp: Path, proc: subprocess.CompletedProcess, code: int, *phrases: str, job: str = JOB) -> dict:
    """Exit code, message, and the record the driver leaves: summary status/error and JOB_FAILED."""
    assert proc.returncode == code, proc.stderr[-3000:]
    said(proc, *phrases)
    s = summary(tmp, job)
    assert s["status"] == "failed" and s["exit_code"] == code
    assert all(p in s["error"] for p in phrases), s["error"]
    last = events(tmp, job)[-1]
    assert last["event_type"] == "JOB_FAILED" and all(p in last["error"] for p in phrases)
    return s


def rejects(tmp: Path, job: str = JOB) -> list[dict[str, Any]]:
    path = tmp / "jobs" / job / "rejects" / "rejects.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def out(tmp: Path) -> Path:
    return tmp / "out" / "result.jsonl"


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def good(i: int) -> bytes:
    return orjson.dumps({"text": f"record number {i} " * 5, "id": i})


KEEP_ALL = [{"text_length_filter": {"min_len": 0}}]


# ---- recipes: rejected before any work, the job they target untouched --------------------
@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job killed (SIGKILL) after its second partition completed: checkpoints, results, events."""
    tmp = tmp_path_factory.mktemp("interrupted")
    recipe = make_recipe(tmp, rows=300, checkpoint={"strategy": "every_op"})
    assert dj_process(recipe, JOB, env={"DJ_FAILPOINTS": "partition_done=2"}).returncode == -signal.SIGKILL
    assert list((tmp / "ckpt" / JOB).glob("checkpoint_*.json"))
    return tmp


RECIPE_CASES: dict[str, tuple[dict[str, Any], list[str], list[str]]] = {
    # id: (recipe changes, CLI overrides, phrases naming the problem and the fix)
    "unknown_op": ({"process": [{"clean_linkz_mapper": {}}]}, [],
                   ["unknown op 'clean_linkz_mapper'", "did you mean 'clean_links_mapper'", "--list-ops"]),
    "typo_in_key": ({"partiton": {"size": 10}}, [], ["unknown key 'partiton'", "did you mean 'partition'"]),
    "typo_in_op_parameter": ({"process": [{"text_length_filter": {"min_length": 5}}]}, [],
                             ["process[0].text_length_filter", "unknown parameter 'min_length'", "did you mean 'min_len'"]),
    "wrong_type": ({"np": "many"}, [], ["np:", "valid integer", "(got 'many')"]),
    "wrong_type_in_op": ({"process": [{"text_length_filter": {"min_len": "ten"}}]}, [],
                         ["text_length_filter: min_len", "valid integer", "(got 'ten')"]),
    "bad_strategy_enum": ({"checkpoint": {"strategy": "sometimes"}}, [],
                          ["checkpoint.strategy", "'every_op'", "'every_n_ops'", "(got 'sometimes')"]),
    "bad_executor_enum": ({"executor_type": "spark"}, [], ["executor_type", "'ray'", "(got 'spark')"]),
    "manual_without_op_names": ({"checkpoint": {"strategy": "manual"}}, [],
                                ["strategy 'manual' needs checkpoint.op_names"]),
    "manual_names_not_in_recipe": ({"checkpoint": {"strategy": "manual", "op_names": ["clean_link_mapper"]}}, [],
                                   ["['clean_link_mapper'] are not ops of this recipe", "choose from",
                                    "clean_links_mapper"]),
    "empty_process_list": ({"process": []}, [], ["the recipe has no ops", "add at least one op"]),
    "op_entry_with_two_names": ({"process": [{"clean_links_mapper": {}, "clean_email_mapper": {}}]}, [],
                                ["process[0]", "single {op_name: {args}} mapping"]),
    "negative_retries": ({"retry": {"max_retries": -1}}, [], ["retry.max_retries", "greater than or equal to 0"]),
    "override_out_of_range": ({}, ["--checkpoint.n_ops", "0"], ["checkpoint.n_ops", "greater than or equal to 1",
                                                                "(got 0)"]),
    "override_with_typo": ({}, ["--checkpoint.strategyy", "every_op"],
                           ["unknown key 'checkpoint.strategyy'", "did you mean 'checkpoint.strategy'"]),
    "override_without_value": ({}, ["--partition.size"], ["override --partition.size has no value"]),
}


@pytest.mark.parametrize("case", list(RECIPE_CASES))
def test_bad_recipe_is_refused_with_exit_2_and_the_job_is_untouched(interrupted, case):
    changes, overrides, phrases = RECIPE_CASES[case]
    recipe = make_recipe(interrupted, rows=300, name=f"bad-{case}", **{"checkpoint": {"strategy": "every_op"}, **changes})
    before = job_state(interrupted)
    proc = dj_process(recipe, JOB, *overrides)
    assert proc.returncode == 2, proc.stderr
    said(proc, "RecipeError", *phrases)
    assert job_state(interrupted) == before  # no lock, no event, no summary change, no checkpoint touched


def test_missing_recipe_file_names_the_path(interrupted):
    before = job_state(interrupted)
    proc = dj_process(interrupted / "no-such-recipe.yaml", JOB)
    assert proc.returncode == 2
    said(proc, "no-such-recipe.yaml' does not exist", "check the --config path")
    assert job_state(interrupted) == before


def test_recipe_that_is_not_yaml_is_refused(interrupted):
    bad = interrupted / "broken.yaml"
    bad.write_text("process: [clean_links_mapper: {\n  - ]")
    before = job_state(interrupted)
    proc = dj_process(bad, JOB)
    assert proc.returncode == 2
    said(proc, "broken.yaml' is not valid YAML", "line")
    assert job_state(interrupted) == before


def test_bad_export_suffix_is_a_recipe_error(interrupted):
    recipe = make_recipe(interrupted, rows=300, name="bad-export", checkpoint={"strategy": "every_op"},
                         export_path=str(interrupted / "out" / "result.csv"))
    before = job_state(interrupted)
    proc = dj_process(recipe, JOB)
    assert proc.returncode == 2, proc.stderr
    said(proc, "result.csv", "use a .jsonl, .jsonl.gz or .parquet file name")
    assert job_state(interrupted) == before


def test_after_every_rejection_the_job_still_resumes_to_the_full_output(interrupted):
    """Runs last in this group: nothing the bad recipes did cost the interrupted job anything."""
    recipe = interrupted / "recipe.yaml"
    proc = dj_process(recipe, JOB)
    assert proc.returncode == 0, proc.stderr
    assert output_rows(out(interrupted)) == expected_rows(recipe)
    after = events(interrupted, JOB)[event_types(events(interrupted, JOB)).index("JOB_RESUMED"):]
    assert any(e["event_type"] == "PARTITION_SKIPPED" for e in after)  # the completed work was kept


# ---- data -------------------------------------------------------------------------
def test_missing_dataset_fails_with_exit_3_naming_the_path(tmp_path):
    recipe = make_recipe(tmp_path, dataset_path=str(tmp_path / "nope" / "data.jsonl"))
    proc = dj_process(recipe, JOB)
    failed_with(tmp_path, proc, 3, "nope/data.jsonl' does not exist", "check the path")
    assert job_files(tmp_path, JOB).plan() is None
    assert not out(tmp_path).exists()


def test_empty_dataset_fails_with_exit_3(tmp_path):
    data = tmp_path / "empty.jsonl"
    data.write_bytes(b"\n  \n")
    proc = dj_process(make_recipe(tmp_path, dataset_path=str(data)), JOB)
    failed_with(tmp_path, proc, 3, "holds no valid records (0 rejected)", "check the file and text_keys")
    assert not out(tmp_path).exists()


def test_a_dataset_of_only_bad_records_fails_and_keeps_the_rejects(tmp_path):
    data = write_lines(tmp_path / "bad.jsonl", [b'{"id": 1}', b"not json", b'{"text": 7}'])
    proc = dj_process(make_recipe(tmp_path, dataset_path=str(data)), JOB)
    failed_with(tmp_path, proc, 3, "holds no valid records (3 rejected", "rejects.jsonl")
    assert [r["record"] for r in rejects(tmp_path)] == [1, 2, 3]


# each: a bad line, and the reason its reject must carry
BAD_RECORDS = {
    "invalid_json": (b'{"text": "unterminated', "invalid JSON"),
    "missing_text_key": (b'{"id": -1, "body": "text under another key"}', "missing text key 'text'"),
    "non_string_text": (b'{"id": -1, "text": 42}', "text key 'text' holds int, not a string"),
    "null_text": (b'{"id": -1, "text": null}', "text key 'text' holds NoneType, not a string"),
    "not_an_object": (b'["text", "in", "a", "list"]', "record is a JSON list, not an object"),
    "invalid_utf8": (b'{"id": -1, "text": "caf\xe9 latin-1 bytes \xff"}', "not valid UTF-8"),
    "lone_surrogate": (b'{"id": -1, "text": "\\ud800 half a pair"}', "invalid JSON"),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_malformed_record_is_rejected_with_its_line_and_nothing_else_is_lost(tmp_path, case):
    bad, reason = BAD_RECORDS[case]
    lines = [good(i) for i in range(40)]
    lines.insert(25, bad)  # line 26, inside the first partition
    data = write_lines(tmp_path / "input.jsonl", lines)
    proc = dj_process(make_recipe(tmp_path, dataset_path=str(data), process=KEEP_ALL, partition={"size": 30}), JOB)
    assert proc.returncode == 0, proc.stderr
    [rej] = rejects(tmp_path)
    assert rej["record"] == 26 and rej["file"] == str(data) and reason in rej["reason"]
    assert rej["raw"] == bad.decode("utf-8", "replace")
    assert [r["id"] for r in output_rows(out(tmp_path))] == list(range(40))  # every good row, in order
    s = summary(tmp_path, JOB)
    assert s["status"] == "completed" and s["rejected_samples"] == 1
    assert any(e["event_type"] == "WARNING" and e.get("rejected") == 1 for e in events(tmp_path, JOB))


def test_malformed_record_with_policy_fail_stops_before_any_partition(tmp_path):
    lines = [good(i) for i in range(40)]
    lines.insert(7, b'{"text": "unterminated')
    data = write_lines(tmp_path / "input.jsonl", lines)
    recipe = make_recipe(tmp_path, dataset_path=str(data), malformed_records="fail")
    proc = dj_process(recipe, JOB)
    failed_with(tmp_path, proc, 3, "input.jsonl:8: invalid JSON", "set malformed_records: reject")
    assert "PARTITION_START" not in event_types(events(tmp_path, JOB))


def test_a_huge_line_becomes_its_own_partition_and_comes_out_whole(tmp_path):
    huge = {"text": "word " * 600_000 + "end", "id": 1}  # 3 MB, three times partition.max_size_mb
    data = write_lines(tmp_path / "input.jsonl", [good(0), orjson.dumps(huge), good(2)])
    recipe = make_recipe(tmp_path, dataset_path=str(data), process=KEEP_ALL, partition={"size": 100, "max_size_mb": 1})
    proc = dj_process(recipe, JOB)
    assert proc.returncode == 0, proc.stderr
    assert output_rows(out(tmp_path))[1] == huge
    plan = job_files(tmp_path, JOB).plan()
    assert [p["sample_count"] for p in plan["partitions"]] == [1, 1, 1]
    assert not rejects(tmp_path)


def test_mixed_schema_parquet_keeps_every_value_and_rejects_non_string_text(tmp_path):
    ds = tmp_path / "ds"
    ds.mkdir()
    pq.write_table(pa.table({"text": ["alpha " * 5, "beta " * 5], "meta": [1, 2], "id": [0, 1]}), ds / "p0.parquet")
    pq.write_table(pa.table({"text": ["gamma " * 5], "meta": ["free text"], "id": [2],
                             "extra": [[1.5, 2.5]]}), ds / "p1.parquet")
    pq.write_table(pa.table({"text": [5, 6], "id": [3, 4]}), ds / "p2.parquet")
    proc = dj_process(make_recipe(tmp_path, dataset_path=str(ds), process=KEEP_ALL), JOB)
    assert proc.returncode == 0, proc.stderr
    got = output_rows(out(tmp_path))
    assert [(r["id"], r["meta"], r.get("extra")) for r in got] == [(0, 1, None), (1, 2, None),
                                                                    (2, "free text", [1.5, 2.5])]
    assert [(Path(r["file"]).name, r["record"]) for r in rejects(tmp_path)] == [("p2.parquet", 1), ("p2.parquet", 2)]
    assert all("holds int, not a string" in r["reason"] for r in rejects(tmp_path))


def test_a_field_no_parquet_type_can_hold_fails_at_once_naming_it_and_jsonl_export_then_keeps_it(tmp_path):
    rows = [{"text": f"row {i} " * 8, "id": i, "x": i} for i in range(6)]
    rows[1]["x"], rows[2]["x"] = 2**70, "seven"  # past int64, and a string among ints
    data = write_lines(tmp_path / "input.jsonl", [json.dumps(r).encode() for r in rows])  # orjson stops at 64 bits
    recipe = make_recipe(tmp_path, dataset_path=str(data), process=KEEP_ALL,
                         export_path=str(tmp_path / "out" / "result.parquet"))
    proc = dj_process(recipe, JOB)
    failed_with(tmp_path, proc, 6, "cannot export to Parquet: field 'x'", "export to .jsonl")
    failures = [e for e in events(tmp_path, JOB) if e["event_type"] == "PARTITION_FAILED"]
    assert [(e["retry_count"], e["final"]) for e in failures] == [(0, True)]  # retrying cannot help
    assert not (tmp_path / "out" / "result.parquet").exists()
    fixed = dj_process(recipe, JOB, "--export_path", str(out(tmp_path)))
    assert fixed.returncode == 0, fixed.stderr
    assert output_rows(out(tmp_path)) == rows


def test_a_field_typed_differently_across_partitions_is_bad_input_for_parquet_and_jsonl_resume_keeps_it(tmp_path):
    rows = [{"text": f"row {i} " * 8, "id": i, "x": i if i < 100 else f"s{i}"} for i in range(200)]
    data = write_lines(tmp_path / "input.jsonl", [orjson.dumps(r) for r in rows])
    recipe = make_recipe(tmp_path, dataset_path=str(data), process=KEEP_ALL, partition={"size": 100},
                         export_path=str(tmp_path / "out" / "result.parquet"))
    proc = dj_process(recipe, JOB)
    failed_with(tmp_path, proc, 3, "cannot export to Parquet", "Field x has incompatible types", "export to .jsonl")
    assert not (tmp_path / "out" / "result.parquet").exists()
    fixed = dj_process(recipe, JOB, "--export_path", str(out(tmp_path)))
    assert fixed.returncode == 0, fixed.stderr
    assert output_rows(out(tmp_path)) == rows  # the Parquet-encoded shards were not reused as JSON lines
    assert "CHECKPOINT_LOAD" in event_types(events(tmp_path, JOB))  # the ops' work was


def test_a_finished_job_exported_again_in_another_format_is_a_valid_file_of_that_format(tmp_path):
    recipe = make_recipe(tmp_path, rows=300, process=KEEP_ALL)
    assert dj_process(recipe, JOB).returncode == 0
    as_parquet = tmp_path / "out" / "again.parquet"
    again = dj_process(recipe, JOB, "--export_path", str(as_parquet))
    assert again.returncode == 0, again.stderr
    assert pq.read_table(as_parquet).to_pylist() == output_rows(out(tmp_path))


def test_parquet_without_the_text_column_names_the_columns_and_text_keys(tmp_path):
    data = tmp_path / "input.parquet"
    pq.write_table(pa.table({"content": ["some words here"], "id": [0]}), data)
    proc = dj_process(make_recipe(tmp_path, dataset_path=str(data)), JOB)
    failed_with(tmp_path, proc, 3, "has no text column 'text'", "['content', 'id']", "set text_keys")


def test_a_file_that_is_not_parquet_is_bad_input_not_a_crash(tmp_path):
    data = tmp_path / "input.parquet"
    data.write_bytes(b"PAR1 this was never a parquet file")
    proc = dj_process(make_recipe(tmp_path, dataset_path=str(data)), JOB)
    failed_with(tmp_path, proc, 3, "input.parquet: not a readable Parquet file", "replace it or remove it")


def test_a_truncated_gzip_is_bad_input_not_a_crash(tmp_path):
    blob = gzip.compress(b"".join(good(i) + b"\n" for i in range(2000)))
    data = tmp_path / "input.jsonl.gz"
    data.write_bytes(blob[: len(blob) // 2])
    proc = dj_process(make_recipe(tmp_path, dataset_path=str(data)), JOB)
    failed_with(tmp_path, proc, 3, "input.jsonl.gz: unreadable after line", "truncated or corrupt")
    assert job_files(tmp_path, JOB).plan() is None  # no half plan


# ---- storage --------------------------------------------------------------------------
def test_read_only_checkpoint_dir_fails_before_any_work_with_exit_5(tmp_path, tmpfs):
    ro = tmpfs("ro", read_only=True)
    proc = dj_process(make_recipe(tmp_path, checkpoint_dir=str(ro)), JOB)
    failed_with(tmp_path, proc, 5, str(ro), "Read-only file system", "check that the storage")
    assert "PROCESSING_START" not in event_types(events(tmp_path, JOB))


def test_read_only_work_dir_fails_with_exit_5_naming_it(tmp_path, tmpfs):
    ro = tmpfs("ro", read_only=True)
    proc = dj_process(make_recipe(tmp_path, work_dir=str(ro / "jobs")), JOB)
    assert proc.returncode == 5, proc.stderr
    said(proc, f"{ro}/jobs", "Read-only file system")


def test_work_dir_under_a_regular_file_fails_with_exit_5(tmp_path):
    (tmp_path / "afile").write_text("not a directory")
    proc = dj_process(make_recipe(tmp_path, work_dir=str(tmp_path / "afile" / "jobs")), JOB)
    assert proc.returncode == 5, proc.stderr
    said(proc, "afile/jobs", "is a file, not a directory", "fix the path")


def test_unwritable_event_log_dir_fails_with_exit_5(tmp_path, tmpfs):
    ro = tmpfs("ro", read_only=True)
    proc = dj_process(make_recipe(tmp_path, event_log_dir=str(ro)), JOB)
    assert proc.returncode == 5, proc.stderr
    said(proc, "cannot write the event log", str(ro), "point event_log_dir at a writable")
    assert "Traceback" not in proc.stderr


def test_full_disk_fails_partitions_keeps_the_rest_and_resumes_once_space_is_freed(tmp_path, tmpfs):
    """A 512 KiB tmpfs as checkpoint_dir fills up after a few partitions (ENOSPC)."""
    disk = tmpfs("disk", size="512k")
    recipe = make_recipe(tmp_path, rows=2000, checkpoint_dir=str(disk), checkpoint={"strategy": "every_op"})
    proc = dj_process(recipe, JOB)
    s = failed_with(tmp_path, proc, 6, "No space left on device", "has space", "resume with: dj-process")
    assert "partitions failed after 2 retries" in s["error"]  # retried: ENOSPC may be transient
    report = job_files(tmp_path, JOB).report()
    statuses = [p["status"] for p in report["partitions"]]
    assert "failed" in statuses and "completed" in statuses  # what fit was kept
    kept = checksums(tmp_path / "jobs" / JOB / "results")
    assert kept and not list(disk.rglob("*.tmp-*"))  # no torn temporary left to eat space
    remount(disk, "64m")
    assert dj_process(recipe, JOB).returncode == 0
    assert output_rows(out(tmp_path)) == expected_rows(recipe)
    assert kept.items() <= checksums(tmp_path / "jobs" / JOB / "results").items()  # earlier results reused


@pytest.mark.s3
def test_missing_bucket_fails_before_any_work_with_exit_5(tmp_path, s3_env):
    proc = dj_process(make_recipe(tmp_path, checkpoint_dir="s3://no-such-bucket-dj/ckpt"), JOB)
    failed_with(tmp_path, proc, 5, "bucket 'no-such-bucket-dj' does not exist", s3_env["AWS_ENDPOINT_URL"],
                "create it first")
    assert "PROCESSING_START" not in event_types(events(tmp_path, JOB))


@pytest.mark.s3
def test_bad_credentials_fail_with_exit_5_and_never_echo_the_secret(tmp_path, s3_with_auth):
    wrong = "wrong-secret-never-printed-3b1d"
    env = {"AWS_ENDPOINT_URL": s3_with_auth, "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONG", "AWS_SECRET_ACCESS_KEY": wrong}
    proc = dj_process(make_recipe(tmp_path, checkpoint_dir="s3://some-bucket/ckpt"), JOB, env=env)
    failed_with(tmp_path, proc, 5, "access denied", "check the credentials")
    texts = [proc.stdout, proc.stderr, *(p.read_text() for p in tmp_path.rglob("*") if p.is_file()
                                          and p.suffix in (".json", ".jsonl", ".log"))]
    assert not any(wrong in t for t in texts)


@pytest.mark.s3
def test_s3_endpoint_going_away_mid_run_fails_partitions_then_resumes_losing_nothing(tmp_path, restartable_s3):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": restartable_s3.url}, skip_instance_cache=True)
    fs.mkdir("flaky")
    ops = [{"clean_links_mapper": {}}, {"slow_mapper": {"seconds": 0.3}}, {"text_length_filter": {"min_len": 100}}]
    recipe = make_recipe(tmp_path, rows=200, process=ops, checkpoint_dir="s3://flaky/ckpt", partition={"size": 40},
                         checkpoint={"strategy": "every_op"}, retry={"max_retries": 0})
    env = {"AWS_ENDPOINT_URL": restartable_s3.url}
    proc = start_dj_process(recipe, JOB, env=env)
    wait_for(lambda: event_types(events_so_far(tmp_path, JOB)).count("PARTITION_COMPLETE") >= 2, 60,
             "two completed partitions", every=0.05, process=proc)
    restartable_s3.stop()
    stdout, stderr = proc.communicate(timeout=120)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    failed_with(tmp_path, done, 6, restartable_s3.url, "check that the endpoint is up", "resume with")
    restartable_s3.start()
    before = set(fs.ls("flaky/ckpt/j/results", refresh=True))
    assert before  # the results written before the outage are still there
    assert dj_process(recipe, JOB, env=env).returncode == 0
    assert output_rows(out(tmp_path)) == expected_rows(recipe)
    assert before <= set(fs.ls("flaky/ckpt/j/results", refresh=True))


# ---- misuse -----------------------------------------------------------------------------
def test_second_run_while_the_first_runs_is_refused_and_changes_nothing(tmp_path):
    ops = [{"slow_mapper": {"seconds": 1.5}}, {"text_length_filter": {"min_len": 100}}]
    recipe = make_recipe(tmp_path, rows=300, process=ops)
    first = start_dj_process(recipe, JOB)
    try:
        wait_for(lambda: "PARTITION_START" in event_types(events_so_far(tmp_path, JOB)), 60, "a partition started",
                 every=0.05, process=first)
        before = job_files(tmp_path, JOB).summary_path.read_bytes()
        second = dj_process(recipe, JOB)
        assert second.returncode == 4
        said(second, f"job {JOB} is running (pid {first.pid}", f"dj-stop {JOB}", "another --job_id")
        assert job_files(tmp_path, JOB).summary_path.read_bytes() == before
        assert wait_exit(first, 120) == 0
    finally:
        if first.poll() is None:
            first.kill()
    evs = events(tmp_path, JOB)
    assert {e["pid"] for e in evs if e["event_type"].startswith("JOB_")} == {first.pid}  # the refused run wrote none
    assert output_rows(out(tmp_path)) == expected_rows(recipe)


def test_rerunning_a_completed_job_redoes_nothing_and_rewrites_the_same_bytes(tmp_path):
    recipe = make_recipe(tmp_path, rows=300)
    assert dj_process(recipe, JOB).returncode == 0
    first = out(tmp_path).read_bytes()
    ckpts = checksums(tmp_path / "ckpt")
    assert dj_process(recipe, JOB).returncode == 0
    after = events(tmp_path, JOB)[event_types(events(tmp_path, JOB)).index("JOB_RESUMED"):]
    assert [e["event_type"] for e in after].count("PARTITION_SKIPPED") == 3
    assert "OP_START" not in [e["event_type"] for e in after]
    assert out(tmp_path).read_bytes() == first and checksums(tmp_path / "ckpt") == ckpts


def test_resuming_after_the_input_changed_is_refused_and_keeps_the_checkpoints(tmp_path):
    recipe = make_recipe(tmp_path, rows=300, checkpoint={"strategy": "every_op"})
    assert dj_process(recipe, JOB, env={"DJ_FAILPOINTS": "partition_done=1"}).returncode == -signal.SIGKILL
    with open(tmp_path / "input.jsonl", "ab") as fh:
        fh.write(good(10_000) + b"\n")
    kept = checksums(tmp_path / "ckpt", tmp_path / "jobs" / JOB / "metadata")
    proc = dj_process(recipe, JOB)
    failed_with(tmp_path, proc, 3, "changed since job j was planned", "start a new job with another --job_id")
    assert checksums(tmp_path / "ckpt", tmp_path / "jobs" / JOB / "metadata") == kept


def dj_stop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "djworker.cli.stop", *args], env=env_with(), capture_output=True,
                          text=True, timeout=60)


def test_dj_stop_on_a_completed_job_signals_nothing_and_changes_nothing(tmp_path):
    assert dj_process(make_recipe(tmp_path, rows=100), JOB).returncode == 0
    before = job_state(tmp_path)
    proc = dj_stop(JOB, "--base-dir", str(tmp_path / "jobs"))
    assert proc.returncode == 2
    said(proc, f"job {JOB} is not running (status: completed")
    assert job_state(tmp_path) == before


def test_dj_stop_on_a_crashed_job_says_how_to_resume(tmp_path):
    recipe = make_recipe(tmp_path, rows=300)
    assert dj_process(recipe, JOB, env={"DJ_FAILPOINTS": "partition_done=1"}).returncode == -signal.SIGKILL
    kept = checksums(tmp_path / "ckpt")
    proc = dj_stop(JOB, "--base-dir", str(tmp_path / "jobs"), "--force")
    assert proc.returncode == 2
    said(proc, "is not running", "has exited", f"resume it with: dj-process --config {recipe} --job_id {JOB}")
    assert checksums(tmp_path / "ckpt") == kept
    assert dj_process(recipe, JOB).returncode == 0


def test_dj_stop_on_an_unknown_job_names_the_base_dir(tmp_path):
    proc = dj_stop("never-ran", "--base-dir", str(tmp_path))
    assert proc.returncode == 1
    said(proc, "job never-ran not found", "pass --base-dir")


def test_job_id_that_escapes_the_work_dir_is_refused(tmp_path):
    proc = dj_process(make_recipe(tmp_path, rows=50, process=KEEP_ALL), "../escaped")
    assert not (tmp_path / "escaped").exists()
    assert proc.returncode == 2
    said(proc, "'../escaped'", "job id")


def test_integers_beyond_int64_come_out_exactly_as_they_went_in(tmp_path):
    """orjson (the per-line path) keeps them exact; so must the fast path, or the value silently changes."""
    big = {"text": "a record with a 64-bit unsigned id " * 3, "id": 18446744073709551615}
    data = write_lines(tmp_path / "input.jsonl", [orjson.dumps(big), good(1)])
    assert dj_process(make_recipe(tmp_path, dataset_path=str(data), process=KEEP_ALL), JOB).returncode == 0
    assert output_rows(out(tmp_path))[0]["id"] == 18446744073709551615


def test_a_full_event_log_volume_warns_marks_the_summary_and_loses_no_row(tmp_path, tmpfs):
    """The policy (docs/reliability.md): keep processing; one WARNING on stderr; job_summary.json
    says the log is incomplete; checkpoints and results are untouched, and the resume is exactly-once."""
    disk = tmpfs("events", size="64k")
    recipe = make_recipe(tmp_path, rows=2000, event_log_dir=str(disk), checkpoint={"strategy": "every_op"})
    proc = dj_process(recipe, JOB)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said(proc, "WARNING: cannot write the event log", "No space left on device", "free space under event_log_dir")
    assert proc.stderr.count("WARNING: cannot write the event log") == 1
    s = summary(tmp_path, JOB)
    assert s["status"] == "completed" and s["event_log_degraded"]["events_dropped"] > 0
    assert output_rows(out(tmp_path)) == expected_rows(recipe)
    log = disk / JOB / "event_logs" / "events.jsonl"
    lines = log.read_bytes().splitlines()
    assert lines and all(orjson.loads(line) for line in lines)  # no torn line was left behind
    results = checksums(tmp_path / "jobs" / JOB / "results")
    remount(disk, "64m")
    again = dj_process(recipe, JOB)
    assert again.returncode == 0, again.stderr[-3000:]
    assert output_rows(out(tmp_path)) == expected_rows(recipe)
    assert checksums(tmp_path / "jobs" / JOB / "results") == results  # nothing redone, nothing rewritten
    last = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    run = last[max(i for i, e in enumerate(last) if e["event_type"] == "JOB_RESUMED"):]
    assert {e["event_type"] for e in run} >= {"PARTITION_SKIPPED", "JOB_COMPLETE"}
    assert "PARTITION_START" not in {e["event_type"] for e in run}
    assert summary(tmp_path, JOB).get("event_log_degraded") is None
