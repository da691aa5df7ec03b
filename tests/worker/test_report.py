"""final_mapping_report.json is built from the progress fold over the plan, and a fold seeded from
an earlier report keeps what that report recorded when the events are gone."""
from __future__ import annotations

from djworker.plan import Partition, Plan
from djworker.progress import ProgressFold
from djworker.report import mapping_report


def plan(n: int) -> Plan:
    parts = tuple(Partition(partition_id=i, path="", sample_count=10 + i, bytes=1, checksum=f"{i:020d}", source={})
                  for i in range(n))
    return Plan(job_id="j", dataset_path="d", input_files=[], input_fingerprint="f", text_key="text",
                partition_size=10, max_size_mb=1.0, total_samples=sum(p.sample_count for p in parts),
                rejected_samples=2, rejects_path=None, created_at=0.0, partitions=parts)


def ev(event_type: str, ts: float, **fields) -> dict:
    return {"event_type": event_type, "timestamp": ts, "job_id": "j", **fields}


RUN = [ev("JOB_START", 1),
       ev("PARTITION_START", 2, partition_id=0, retry_count=0), ev("PARTITION_COMPLETE", 5, partition_id=0, rows_out=8),
       ev("PARTITION_START", 2, partition_id=1, retry_count=0),
       ev("PARTITION_FAILED", 3, partition_id=1, retry_count=0, final=False, error="E: x"),
       ev("PARTITION_START", 4, partition_id=1, retry_count=1),
       ev("PARTITION_FAILED", 6, partition_id=1, retry_count=1, final=True, error="E: y"),
       ev("JOB_FAILED", 7)]


def fold_of(events: list[dict], p: Plan) -> ProgressFold:
    fold = ProgressFold(history=False)
    fold.seed({"partitions": [{"partition_id": x.partition_id, "sample_count": x.sample_count} for x in p.partitions]})
    for e in events:
        fold.add(e)
    return fold


def test_each_planned_partition_gets_its_outcome_from_the_fold():
    p = plan(3)
    report = mapping_report("j", p, fold_of(RUN, p).result(None, 10), 10).model_dump()
    assert (report["total_samples"], report["rejected_samples"], report["output_samples"]) == (33, 2, 8)
    done, failed, untouched = report["partitions"]
    assert done == {"partition_id": 0, "input_samples": 10, "output_samples": 8, "status": "completed", "retries": 0,
                    "start_time": 2, "end_time": 5, "duration_s": 3, "error": None}
    assert (failed["status"], failed["retries"], failed["error"], failed["duration_s"]) == ("failed", 1, "E: y", 2)
    assert (untouched["status"], untouched["output_samples"], untouched["start_time"]) == ("pending", None, None)


def test_a_fold_seeded_from_an_earlier_report_knows_what_lost_events_recorded():
    p = plan(3)
    earlier = mapping_report("j", p, fold_of(RUN, p).result(None, 10), 10).model_dump()
    fold = fold_of([], p)  # event logging off: the next run sees no earlier events
    fold.seed_outcomes(earlier)
    assert fold.output_rows(0) == 8 and fold.output_rows(1) is None
    fold.add(ev("JOB_RESUMED", 20))
    fold.add(ev("PARTITION_SKIPPED", 21, partition_id=0))  # no rows_out: the skip keeps the recorded count
    again = mapping_report("j", p, fold.result(None, 22), 22).model_dump()
    assert [(x["status"], x["output_samples"]) for x in again["partitions"]] == \
        [("completed", 8), ("pending", None), ("pending", None)]
