"""The cluster configs are checked the way their tools check them: the cluster-launcher YAMLs as
`ray up` does (Ray's defaults filled in, then Ray's own schema); the KubeRay manifest's pod
templates and volume claim field by field against the Kubernetes API's own models (the
`kubernetes` client's, generated from the API's OpenAPI schema), and its RayJob fields as KubeRay
v1 defines them (no KubeRay CRD schema ships in a Python package; the fields checked are the ones
this manifest relies on)."""

from __future__ import annotations

import copy
import shlex

import pytest
import ray
import yaml

from tests.conftest import REPO

LAUNCHER_CONFIGS = ["cluster.yaml", "cluster-onprem.yaml"]
RAYJOB = REPO / "k8s" / "rayjob.yaml"


def ray_up_validate(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_passes_rays_validation(name):
    config = load(name)
    prepared = ray_up_validate(config)
    assert prepared["head_node_type"] in prepared["available_node_types"]
    setup = "\n".join(config["setup_commands"])
    # hpsearch from this checkout with its pinned dependencies, the data once per node, shared results.
    assert "pip install" in setup and "-e ~/hpsearch" in setup and '"ray[default,tune]==2.60.*"' in setup
    assert "load_dataset('fashion_mnist')" in setup
    assert "HPSEARCH_RESULTS_DIR=/mnt/hpsearch/results" in setup and "/mnt/hpsearch" in setup
    head = "\n".join(config["head_start_ray_commands"])
    assert "mlflow server" in head and "--host 0.0.0.0" not in head  # private address only
    assert "--dashboard-host=127.0.0.1" in head
    assert "MLFLOW_TRACKING_URI" in "\n".join(config["head_setup_commands"])


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_clusters_admit_only_holders_of_their_secrets(name):
    config = load(name)
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    ray_starts = [c for c in starts if "ray start" in c]
    assert len(ray_starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in ray_starts), ray_starts
    # One token, made on the head and copied by the launcher to each worker; drivers use token mode too.
    head_setup = "\n".join(config["head_setup_commands"])
    assert "get-auth-token --generate" in head_setup and "test -s ~/.ray/auth_token" in head_setup
    assert config["cluster_synced_files"] == ["~/.ray/auth_token"]
    assert "export RAY_AUTH_MODE=token" in "\n".join(config["setup_commands"])
    # MLflow: the basic-auth app, its secrets made once on the shared volume, readable by the user only;
    # its runs there too, so they outlive the head.
    mlflow = next(c for c in config["head_start_ray_commands"] if "mlflow server" in c)
    assert "--app-name basic-auth" in mlflow and "MLFLOW_AUTH_ADMIN_PASSWORD=$(cat /mnt/hpsearch/" in mlflow
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat /mnt/hpsearch/" in mlflow
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in mlflow  # no job runner's consumers on the head
    assert "--backend-store-uri sqlite:////mnt/hpsearch/" in mlflow and "$HOME/mlflow/mlflow.db" not in mlflow
    assert "umask 077" in head_setup and "chmod 700 /mnt/hpsearch/mlflow/secrets" in head_setup
    assert "MLFLOW_TRACKING_PASSWORD" in head_setup and "database_uri = sqlite:////mnt/hpsearch/" in head_setup


def test_cloud_config_has_autoscaling_4_gpu_workers():
    config = load("cluster.yaml")
    workers = config["available_node_types"]["gpu_worker"]
    assert config["provider"]["type"] == "aws" and workers["node_config"]["InstanceType"] == "g5.12xlarge"
    assert workers["min_workers"] < workers["max_workers"]
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}


def test_the_validation_can_fail():
    config = load("cluster.yaml")
    config["available_node_types"]["gpu_worker"]["max_wokers"] = 4  # a typo Ray must refuse
    with pytest.raises(Exception, match="max_wokers"):
        ray_up_validate(config)


# --- KubeRay --------------------------------------------------------------------------------

def k8s_problems(value, type_name: str, path: str) -> list[str]:
    """Every key of `value` must be a field of the Kubernetes API type `type_name`, recursively,
    with the JSON type the API expects."""
    from kubernetes import client

    if type_name.startswith("list["):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, v in enumerate(value) for p in k8s_problems(v, type_name[5:-1], f"{path}[{i}]")]
    if type_name.startswith("dict("):
        inner = type_name[type_name.index(",") + 1:-1].strip()
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping"]
        return [p for k, v in value.items() for p in k8s_problems(v, inner, f"{path}.{k}")]
    primitive = {"str": str, "int": int, "bool": bool, "float": (int, float)}.get(type_name)
    if primitive is not None:
        return [] if isinstance(value, primitive) else [f"{path}: expected {type_name}, got {value!r}"]
    model = getattr(client, type_name, None)
    if model is None:
        return []  # free-form ('object', quantities as str-or-int)
    if not isinstance(value, dict):
        return [f"{path}: expected a {type_name} mapping"]
    fields = {json_name: attr for attr, json_name in model.attribute_map.items()}
    problems = []
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{path}.{key}: not a field of {type_name}")
        else:
            problems += k8s_problems(item, model.openapi_types[fields[key]], f"{path}.{key}")
    return problems


def rayjob_documents() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d]
    return {d["kind"]: d for d in docs}


def pod_templates(job: dict) -> dict[str, dict]:
    spec = job["spec"]["rayClusterSpec"]
    return {"head": spec["headGroupSpec"]["template"],
            **{g["groupName"]: g["template"] for g in spec["workerGroupSpecs"]}}


def test_rayjob_manifest():
    docs = rayjob_documents()
    assert set(docs) == {"PersistentVolumeClaim", "RayJob", "NetworkPolicy"}
    claim, job = docs["PersistentVolumeClaim"], docs["RayJob"]
    assert claim["apiVersion"] == "v1" and k8s_problems(claim, "V1PersistentVolumeClaim", "pvc") == []
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # shared by every node

    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    assert set(spec) <= {"entrypoint", "submissionMode", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished",
                         "rayClusterSpec", "runtimeEnvYAML", "activeDeadlineSeconds", "backoffLimit"}
    # The entrypoint is a search.run command line that search.run's own parser accepts.
    words = shlex.split(spec["entrypoint"])
    assert words[:3] == ["python", "-m", "search.run"]
    from search.run import build_parser

    args = build_parser().parse_args(words[3:])
    assert (args.space, args.address, args.gpus) == ("fashion_space", "auto", 4)

    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"].rsplit(".", 1)[0] == ray.__version__.rsplit(".", 1)[0]
    head = cluster["headGroupSpec"]
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())  # KubeRay wants strings
    (workers,) = cluster["workerGroupSpecs"]
    assert workers["minReplicas"] <= workers["replicas"] < workers["maxReplicas"] and cluster["enableInTreeAutoscaling"]
    for name, template in pod_templates(job).items():
        assert k8s_problems(template, "V1PodTemplateSpec", name) == []
        containers = template["spec"]["containers"]
        assert all(c.get("name") and c.get("image") for c in containers)
        ray_container = containers[0]
        mounts = {m["mountPath"] for m in ray_container["volumeMounts"]}
        assert "/mnt/hpsearch" in mounts, name
        env = {e["name"]: e.get("value") for e in ray_container.get("env", [])}
        assert env["HPSEARCH_RESULTS_DIR"].startswith("/mnt/hpsearch/")
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    mlflow = next(c for c in head["template"]["spec"]["containers"] if c["name"] == "mlflow")
    assert "--host 127.0.0.1" in " ".join(mlflow["args"])
    assert {e["name"]: e.get("value") for e in mlflow["env"]}["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    head_env = {e["name"]: e.get("value") for e in head["template"]["spec"]["containers"][0]["env"]}
    assert head_env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"


def secret_env(container: dict) -> dict[str, tuple[str, str]]:
    return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container.get("env", []) if "valueFrom" in e}


def test_kubernetes_cluster_admits_only_its_own_pods_and_holders_of_its_secrets():
    docs = rayjob_documents()
    job, policy = docs["RayJob"], docs["NetworkPolicy"]
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}  # KubeRay makes the token Secret and hands it out
    assert job["spec"]["submissionMode"] == "SidecarMode"
    # MLflow: basic auth with the admin password and form key from a Secret, on the pod's loopback.
    head = pod_templates(job)["head"]["spec"]["containers"]
    mlflow = next(c for c in head if c["name"] == "mlflow")
    args = " ".join(mlflow["args"])
    assert "--app-name basic-auth" in args and "--host 127.0.0.1" in args and "/mnt/hpsearch/mlflow/" in args
    assert secret_env(mlflow) == {"MLFLOW_AUTH_ADMIN_PASSWORD": ("hpsearch-mlflow", "admin-password"),
                                  "MLFLOW_FLASK_SERVER_SECRET_KEY": ("hpsearch-mlflow", "flask-secret")}
    assert secret_env(head[0])["MLFLOW_TRACKING_PASSWORD"] == ("hpsearch-mlflow", "admin-password")
    # The NetworkPolicy: a valid Kubernetes object that selects every pod of the cluster and admits
    # only the cluster's own pods, and the operator on the dashboard's port.
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert k8s_problems(policy, "V1NetworkPolicy", "policy") == []
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for name, template in pod_templates(job).items():
        assert selector.items() <= template["metadata"]["labels"].items(), name
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    own, operator = policy["spec"]["ingress"]
    assert own == {"from": [{"podSelector": {"matchLabels": selector}}]}
    assert operator["ports"] == [{"port": 8265, "protocol": "TCP"}]


def test_the_pod_check_can_fail():
    template = pod_templates(rayjob_documents()["RayJob"])["head"]
    broken = copy.deepcopy(template)
    broken["spec"]["containers"][0]["volumeMount"] = []  # a typo kubectl would refuse
    broken["spec"]["containers"][0]["ports"][0]["containerPort"] = "6379"
    assert k8s_problems(broken, "V1PodTemplateSpec", "head") == [
        "head.spec.containers[0].ports[0].containerPort: expected int, got '6379'",
        "head.spec.containers[0].volumeMount: not a field of V1Container",
    ]


def test_pods_and_image_run_unprivileged():
    for name, template in pod_templates(rayjob_documents()["RayJob"]).items():
        pod = template["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in template["spec"]["containers"]:
            sec = container["securityContext"]
            assert sec["allowPrivilegeEscalation"] is False and sec["capabilities"]["drop"] == ["ALL"], name
    dockerfile = (REPO / "k8s" / "Dockerfile").read_text().splitlines()
    base = next(line.split()[1] for line in dockerfile if line.startswith("FROM "))
    name, _, tag = base.partition(":")
    assert tag and tag[0].isdigit() and tag.count(".") >= 2 or "@sha256:" in base, base  # an exact release
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")


def test_onprem_file_names_each_machine_once():
    """A user fills in the addresses under `provider` and nothing else: the head's address reaches
    Ray's start, MLflow and the drivers from the copy of the file `ray up` puts on the head (the
    on-prem launch found it written out twice more, once per place that needs it)."""
    config = load("cluster-onprem.yaml")
    text = "\n".join(line for line in (REPO / "cluster-onprem.yaml").read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    for address in [config["provider"]["head_ip"], *config["provider"]["worker_ips"]]:
        assert text.count(address) == 1, address
    head = "\n".join(config["head_setup_commands"] + config["head_start_ray_commands"])
    assert "ray_bootstrap_config.yaml')))['provider']['head_ip']" in head
    assert "--node-ip-address=$(cat ~/mlflow/head_ip)" in head and '--host "$2"' in head
