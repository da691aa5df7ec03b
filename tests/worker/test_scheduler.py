"""Retry backoff: the three kinds, the cap and the jitter bounds."""
from __future__ import annotations

import random

import pytest

from djworker.errors import RecipeError, StorageUnavailable
from djworker.scheduler import RetryPolicy, backoff_delay


@pytest.mark.parametrize("kind, expected", [
    ("exponential", [1, 2, 4, 8, 10, 10]),
    ("linear", [1, 2, 3, 4, 5, 6]),
    ("fixed", [1, 1, 1, 1, 1, 1]),
])
def test_backoff_kinds_and_cap_without_jitter(kind, expected):
    rng = random.Random(0)
    assert [backoff_delay(kind, a, 1.0, 10.0, 0.0, rng) for a in range(1, 7)] == expected


def test_jitter_stays_within_its_bounds_and_varies():
    rng = random.Random(1)
    delays = [backoff_delay("fixed", 1, 2.0, 60, 0.25, rng) for _ in range(500)]
    assert all(1.5 <= d <= 2.5 for d in delays) and len(set(delays)) > 100


def test_user_errors_are_final_transient_ones_are_retried():
    policy = RetryPolicy(max_retries=2)
    assert policy.is_final(1, RecipeError("bad"))
    assert not policy.is_final(1, StorageUnavailable("down")) and not policy.is_final(2, RuntimeError("x"))
    assert policy.is_final(3, RuntimeError("x"))
