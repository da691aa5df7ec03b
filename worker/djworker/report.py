"""final_mapping_report.json from the progress fold: each planned partition's outcome.  [pure]

The report outlives the event log (rotation, `event_logging.enabled: false`), so the monitor
reconciles with it and a resumed driver seeds its fold from it. Its keys are the ones earlier
versions wrote, so reports of older jobs and of this version read alike."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel

from .plan import Plan
from .progress import PartitionProgress, Progress


class PartitionOutcome(BaseModel):
    partition_id: int
    input_samples: int
    output_samples: Optional[int] = None
    status: str = "pending"  # pending | processing | completed | failed
    retries: int = 0
    start_time: Optional[float] = None
    end_time: Optional[float] = None
    duration_s: Optional[float] = None
    error: Optional[str] = None


class MappingReport(BaseModel):
    job_id: str
    generated_at: float
    total_samples: int
    rejected_samples: int
    output_samples: int
    partitions: list[PartitionOutcome]


def mapping_report(job_id: str, plan: Plan, progress: Progress, now: float) -> MappingReport:
    """The plan's partitions, in plan order, with what the fold says happened to each."""
    outcomes = [_outcome(p.partition_id, p.sample_count, progress.partition_status.get(str(p.partition_id)))
                for p in plan.partitions]
    return MappingReport(job_id=job_id, generated_at=now, total_samples=plan.total_samples,
                         rejected_samples=plan.rejected_samples,
                         output_samples=sum(o.output_samples or 0 for o in outcomes), partitions=outcomes)


def _outcome(pid: int, samples: int, p: Optional[PartitionProgress]) -> PartitionOutcome:
    if p is None:
        return PartitionOutcome(partition_id=pid, input_samples=samples)
    start, end = p.start_time, p.end_time
    return PartitionOutcome(partition_id=pid, input_samples=samples, output_samples=p.output_samples, status=p.status,
                            retries=p.retries, start_time=start, end_time=end,
                            duration_s=end - start if start and end else None, error=p.error)
