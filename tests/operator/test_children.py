import re

import yaml

from djoperator import children
from djoperator.crd import Job, parse_spec

from .factories import SETTINGS, UID, spec

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def job(name: str = "demo", **overrides) -> Job:
    return Job(name, "ns", UID, parse_spec(spec(**overrides)))


def test_names_are_deterministic_and_carry_the_attempt():
    assert children.names("demo", 3) == children.names("demo", 3)
    assert children.names("demo", 3).driver == "demo-driver-3"
    assert children.names("demo", 3).ray == "demo-ray"


def test_long_or_dotted_names_fit_kubernetes_limits_and_stay_distinct():
    long_a, long_b = "a" * 200 + "x", "a" * 200 + "y"
    for name in (long_a, "my.job.v2", "7up"):
        n = children.names(name, 12345)
        assert len(n.driver) <= 63 and len(n.ray) <= 53
        assert DNS1035.match(n.ray) and DNS1035.match(n.recipe)
    assert children.names(long_a, 1).ray != children.names(long_b, 1).ray
    assert children.names("my.job", 1).ray != children.names("my-job", 1).ray


def test_default_executor_owns_no_ray_cluster():
    kinds = [c["kind"] for c in children.desired_children(job(), 1, SETTINGS, "t0k3n")]
    assert kinds == ["ConfigMap", "PersistentVolumeClaim", "Service", "Pod"]
    env = children.driver_pod(job(), 1, SETTINGS)["spec"]["containers"][0]["env"]
    assert not [e for e in env if e["name"].startswith("RAY_")]


def test_ray_executor_adds_a_kuberay_cluster_and_points_the_driver_at_it():
    j = job(executorType="ray", ray={"workerGroups": [{"name": "small", "replicas": 2}]})
    kinds = [c["kind"] for c in children.desired_children(j, 1, SETTINGS, "t0k3n")]
    assert kinds == ["ConfigMap", "PersistentVolumeClaim", "Service", "Secret", "RayCluster", "Pod"]
    cluster = children.ray_cluster(j, SETTINGS)
    group = cluster["spec"]["workerGroupSpecs"][0]
    assert (group["groupName"], group["replicas"], group["minReplicas"], group["maxReplicas"]) == ("small", 2, 2, 2)
    env = {e["name"]: e.get("value") for e in children.driver_pod(j, 1, SETTINGS)["spec"]["containers"][0]["env"]}
    assert env["RAY_ADDRESS"] == "ray://demo-ray-head-svc.ns.svc:10001"


def test_driver_runs_dj_process_with_a_stable_job_id_and_the_spec_overrides():
    j = job(checkpointDir="s3://b/ckpt", exportPath="s3://b/out", datasetPath="s3://b/in.jsonl",
            checkpoint={"strategy": "every_n_ops", "nOps": 2}, overrides={"partition.size": "50", "np": "1"})
    c1 = children.driver_pod(j, 1, SETTINGS)["spec"]["containers"][0]
    c2 = children.driver_pod(j, 2, SETTINGS)["spec"]["containers"][0]
    assert c1["command"] == ["dj-process"] and c1["args"] == c2["args"]
    args = c1["args"]
    pairs = dict(zip(args[::2], args[1:][::2]))
    assert pairs["--job_id"] == "demo-0123abcd"
    assert pairs["--config"] == "/dj/recipe/recipe.yaml"
    assert pairs["--event_log_dir"] == "/dj/state/events" and pairs["--checkpoint_dir"] == "s3://b/ckpt"
    assert pairs["--checkpoint.strategy"] == "every_n_ops" and pairs["--checkpoint.n_ops"] == "2"
    assert pairs["--partition.size"] == "50" and pairs["--np"] == "1"
    assert pairs["--progress-port"] == "8000"


def test_s3_credentials_come_from_the_secret_by_reference_never_by_value():
    j = job(storage={"s3": {"endpointUrl": "http://minio:9000", "secretRef": {"name": "s3-creds"}}})
    pod = children.driver_pod(j, 1, SETTINGS)
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"}}
    assert "value" not in env["AWS_ACCESS_KEY_ID"]


def test_recipe_from_a_user_configmap_is_mounted_not_copied():
    j = Job("demo", "ns", UID, parse_spec({"executorType": "default", "recipeConfigMap": {"name": "mine", "key": "r.yaml"}}))
    assert children.recipe_config_map(j) is None
    volumes = {v["name"]: v for v in children.driver_pod(j, 1, SETTINGS)["spec"]["volumes"]}
    assert volumes["recipe"]["configMap"] == {"name": "mine", "items": [{"key": "r.yaml", "path": "recipe.yaml"}]}


def test_inline_recipe_becomes_a_configmap_file():
    cm = children.recipe_config_map(job())
    assert yaml.safe_load(cm["data"]["recipe.yaml"])["process"] == [{"whitespace_normalization_mapper": {}}]


def test_event_log_volume_choices():
    assert children.state_pvc(job(eventLog={"claimName": "fast"})) is None
    vols = {v["name"]: v for v in children.driver_pod(job(eventLog={"claimName": "fast"}), 1, SETTINGS)["spec"]["volumes"]}
    assert vols["state"] == {"name": "state", "persistentVolumeClaim": {"claimName": "fast"}}
    pvc = children.state_pvc(job(eventLog={"storageClassName": "fast-ssd", "size": "5Gi"}))
    assert pvc["spec"]["storageClassName"] == "fast-ssd"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    vols = {v["name"]: v for v in children.driver_pod(job(eventLog={"emptyDir": True}), 1, SETTINGS)["spec"]["volumes"]}
    assert vols["state"] == {"name": "state", "emptyDir": {}}


def test_every_child_is_owned_and_labelled_for_cleanup():
    j = job(executorType="ray")
    for child in children.desired_children(j, 1, SETTINGS, "t0k3n"):
        meta = child["metadata"]
        assert meta["ownerReferences"][0]["uid"] == UID
        assert meta["labels"][children.LABEL_JOB_UID] == UID
        assert meta["namespace"] == "ns"


def test_head_workers_and_driver_share_the_ray_token_by_reference_only():
    j = job(executorType="ray", ray={"workerGroups": [{"name": "w", "replicas": 1}]})
    secret = children.ray_auth_secret(j, "t0k3n")
    assert secret["metadata"]["name"] == "demo-ray-auth" and secret["stringData"] == {"auth_token": "t0k3n"}
    cluster = children.ray_cluster(j, SETTINGS)["spec"]
    containers = [cluster["headGroupSpec"]["template"]["spec"]["containers"][0],
                  cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0],
                  children.driver_pod(j, 1, SETTINGS)["spec"]["containers"][0]]
    for c in containers:
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"] == {"name": "RAY_AUTH_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": "demo-ray-auth", "key": "auth_token"}}}
    manifests = [children.ray_cluster(j, SETTINGS), children.driver_pod(j, 1, SETTINGS)]
    assert "t0k3n" not in yaml.safe_dump(manifests)  # only the Secret holds the value


def test_pods_run_as_non_root():
    j = job(executorType="ray")
    pods = [children.driver_pod(j, 1, SETTINGS)["spec"]]
    cluster = children.ray_cluster(j, SETTINGS)["spec"]
    pods += [cluster["headGroupSpec"]["template"]["spec"], cluster["workerGroupSpecs"][0]["template"]["spec"]]
    for spec in pods:
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert all(c["securityContext"]["allowPrivilegeEscalation"] is False for c in spec["containers"])


def test_autoscaling_and_checkpoint_retention_reach_their_consumers():
    j = job(executorType="ray", ray={"autoscaling": True}, cleanup={"checkpointRetention": "cleanup_all"})
    assert children.ray_cluster(j, SETTINGS)["spec"]["enableInTreeAutoscaling"] is True
    autoscaler_env = children.ray_cluster(j, SETTINGS)["spec"]["autoscalerOptions"]["env"]
    assert autoscaler_env == children.ray_auth_env(j)  # KubeRay's autoscaler container talks to the GCS too
    assert "autoscalerOptions" not in children.ray_cluster(job(executorType="ray"), SETTINGS)["spec"]
    args = children.driver_pod(j, 1, SETTINGS)["spec"]["containers"][0]["args"]
    assert args[args.index("--intermediate_storage.retention_policy") + 1] == "cleanup_all"
