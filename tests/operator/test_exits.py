"""The operator's exit-code table matches the worker's error classes, code for code."""
import inspect

from djoperator import exits
from djworker import errors


def worker_codes() -> dict[str, int]:
    return {cls.__name__: cls.exit_code for _, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, errors.DJError)}


def test_every_worker_exit_code_is_classified_by_the_operator():
    codes = worker_codes()
    assert set(codes.values()) <= set(exits.PERMANENT) | set(exits.RETRYABLE)
    assert not set(exits.PERMANENT) & set(exits.RETRYABLE)


def test_permanent_codes_are_the_worker_errors_retrying_cannot_fix():
    codes = worker_codes()
    assert exits.PERMANENT.keys() == {codes["RecipeError"], codes["InputError"], codes["PartitionFailed"]}
    for name, code in codes.items():
        cls = getattr(errors, name)
        if cls.retryable:
            assert code not in exits.PERMANENT, name
    assert exits.STOPPED == codes["JobStopped"] and codes["JobLocked"] in exits.RETRYABLE
    assert codes["StorageUnavailable"] in exits.RETRYABLE and codes["DJError"] in exits.RETRYABLE
    assert codes["ClusterLost"] in exits.RETRYABLE and codes["ClusterLost"] != codes["StorageUnavailable"]
