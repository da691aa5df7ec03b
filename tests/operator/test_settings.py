import pytest

from djoperator.main import kopf_settings
from djoperator.settings import parse


def test_defaults_watch_everything_standalone_with_liveness():
    s = parse([], env={})
    assert s.namespaces == () and s.peering is None
    assert s.liveness == "http://0.0.0.0:8080/healthz"
    assert s.progress_endpoint_annotation is None  # pod IPs, unless told otherwise


def test_flags_win_over_env_and_env_over_defaults():
    env = {"DJ_OPERATOR_INTERVAL": "3", "DJ_OPERATOR_NAMESPACES": "a, b", "DJ_OPERATOR_IMAGE": "img:env"}
    s = parse(["--image", "img:flag"], env=env)
    assert s.interval == 3 and s.namespaces == ("a", "b") and s.image == "img:flag"
    assert parse(["-n", "x", "-n", "y"], env=env).namespaces == ("x", "y")
    assert parse(["--all-namespaces"], env=env).namespaces == ()


def test_empty_liveness_disables_it():
    assert parse(["--liveness", ""], env={}).liveness is None


def test_bad_values_are_rejected():
    with pytest.raises(Exception):
        parse(["--interval", "0"], env={})


def test_kopf_posts_only_warnings_and_keeps_its_state_out_of_status():
    import logging

    k = kopf_settings(parse([], env={}))
    assert k.posting.level == logging.WARNING
    assert k.persistence.finalizer == "datajuicer.io/finalizer"
    assert type(k.persistence.progress_storage).__name__ == "AnnotationsProgressStorage"


def test_kopf_retries_its_requests_at_most_5s_apart_for_about_5_minutes():
    from djoperator.main import OUTAGE_TOLERANCE_S

    backoffs = tuple(kopf_settings(parse([], env={})).networking.error_backoffs)
    assert max(backoffs) <= 5, "a watch resumes within 5 s of the apiserver's return"
    assert sum(backoffs) == OUTAGE_TOLERANCE_S >= 300, "an outage of 5 minutes does not end kopf's run"
