"""dj-process's exit-code contract, as the operator acts on it.                     [pure]

The codes are worker/djworker/errors.py's `exit_code`s (plus the signal codes a
container gets when it is killed); tests/operator/test_exits.py pins the two together."""
from __future__ import annotations

from typing import Optional

COMPLETED = 0
STOPPED = 130  # JobStopped: the stop was honoured and the in-flight partition checkpointed

# Codes that retrying the driver cannot fix: (status reason, what the user does next).
PERMANENT: dict[int, tuple[str, str]] = {
    2: ("InvalidRecipe", "the recipe or its overrides are invalid; fix it, then set spec.stop true and back to false"),
    3: ("BadInput", "the input dataset cannot be read; fix spec.datasetPath or the data"),
    6: ("PartitionsFailed", "partitions kept failing after their retries; see the driver log and the event log"),
}
# Codes worth another attempt (it resumes from the last checkpoint), with what they mean.
RETRYABLE: dict[int, str] = {
    1: "the driver crashed",
    4: "the job id was locked by another live run",
    5: "storage was unavailable",
    7: "the Ray cluster was lost (its head stopped answering)",
    STOPPED: "the driver was interrupted",
    137: "the driver was killed (SIGKILL: out of memory, or its node went away)",
    143: "the driver was terminated (SIGTERM)",
}


def is_permanent(code: Optional[int]) -> bool:
    return code in PERMANENT


def cause(code: Optional[int], lost: bool) -> str:
    """What a retryable (or unknown) exit means, in words."""
    if code in RETRYABLE:
        return RETRYABLE[code]
    return "the driver was lost" if lost else "the driver failed"
