"""One small hierarchy that answers "fix the input, or retry later?".

Every message says what happened, where, the offending value and the next step.
Exit codes of the CLIs come from `exit_code`, documented in the README."""
from __future__ import annotations

from typing import ClassVar


class DJError(Exception):
    """Something a user can act on; str(err) alone must say what to do next."""

    retryable: ClassVar[bool] = False
    exit_code: ClassVar[int] = 1


class RecipeError(DJError):
    """The recipe or its overrides are invalid: fix the recipe, retrying cannot help."""

    exit_code = 2


class InputError(DJError):
    """The input dataset cannot be read or changed under a resumed job."""

    exit_code = 3


class JobLocked(DJError):
    """Another live run holds this job id."""

    exit_code = 4


class StorageUnavailable(DJError):
    """Storage could not be reached or written; transient, so partitions retry it."""

    retryable = True
    exit_code = 5


class PartitionFailed(DJError):
    """A partition kept failing after its retries were spent."""

    exit_code = 6


class ClusterLost(DJError):
    """The remote Ray cluster stopped answering mid-job (its head went away); finished work
    is checkpointed, so another attempt on a running cluster resumes it."""

    retryable = True
    exit_code = 7


class JobStopped(DJError):
    """The job was stopped on request; its progress is checkpointed."""

    exit_code = 130
