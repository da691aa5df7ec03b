import pytest

from djoperator.crd import Job, SpecError, parse_spec, parse_status

from .factories import RECIPE, UID, spec


def test_minimal_spec_defaults_to_ray_partitioned_and_operator_created_volume():
    parsed = parse_spec({"recipe": RECIPE})
    assert parsed.executor_type == "ray_partitioned" and parsed.is_ray
    assert parsed.event_log.claim_name is None and not parsed.event_log.empty_dir
    assert parsed.backoff_limit == 3 and parsed.stop is False


@pytest.mark.parametrize("raw, words", [
    ({}, "exactly one of spec.recipe"),
    ({"recipe": RECIPE, "recipeConfigMap": {"name": "r"}}, "exactly one of spec.recipe"),
    ({"recipe": {"dataset_path": "x"}}, "spec.recipe.process"),
    ({"recipe": RECIPE, "jobId": "../etc"}, "spec.jobId"),
    ({"recipe": RECIPE, "executorType": "spark"}, "spec.executorType"),
    ({"recipe": RECIPE, "checkpoint": {"strategy": "manual"}}, "opNames"),
    ({"recipe": RECIPE, "checkpoint": {"nOps": 0}}, "spec.checkpoint.nOps"),
    ({"recipe": RECIPE, "overrides": {"bad key": "1"}}, "spec.overrides"),
    ({"recipe": RECIPE, "eventLog": {"claimName": "x", "emptyDir": True}}, "spec.eventLog"),
    ({"recipe": RECIPE, "unknownField": 1}, "spec.unknownField"),
])
def test_invalid_spec_message_names_the_field(raw, words):
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    assert words in str(err.value)


def test_job_id_is_stable_per_cr_and_pinnable():
    job = Job("demo", "ns", UID, parse_spec(spec()))
    assert job.job_id == "demo-0123abcd"
    assert Job("demo", "ns", UID, parse_spec(spec(jobId="run_7"))).job_id == "run_7"


def test_foreign_status_never_blocks_reconciliation():
    assert parse_status({"attempt": "not a number"}).attempt == 0
    assert parse_status({"phase": "Running", "kopf": {"x": 1}}).phase == "Running"
