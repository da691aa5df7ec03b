"""Shared fixtures live in tests/support/*; each module owns one real server."""
pytest_plugins = [
    "tests.support.s3",
    "tests.support.k8s",
    "tests.support.operator",
]
