"""deploy/: every manifest parses and has what its operator requires; the compose stack, Prometheus and Grafana
refer to each other and to metrics r1kit really exports; the images pin torch as the Makefile does."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifests() -> dict[tuple[str, str], dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found = {}
    for name in kustomization["resources"]:
        for doc in documents(K8S / name):
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), (name, doc)
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def pod_specs(doc: dict) -> list[dict]:
    if doc["kind"] == "PyTorchJob":
        return [r["template"]["spec"] for r in doc["spec"]["pytorchReplicaSpecs"].values()]
    if doc["kind"] == "RayJob":
        cluster = doc["spec"]["rayClusterSpec"]
        groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        return [g["template"]["spec"] for g in groups]
    return [doc["spec"]["template"]["spec"]]


def test_kustomization_lists_existing_files_and_generates_the_recipe():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        assert (K8S / name).is_file(), name
    [generator] = kustomization["configMapGenerator"]
    for name in generator["files"]:
        assert (K8S / name).is_file()
    from r1kit.config import load_recipe

    recipe = load_recipe(K8S / "recipe.yaml", [])  # the mounted recipe is a valid r1kit recipe
    assert recipe.train.strategy == "zero3"


def test_pytorchjob_has_what_the_training_operator_requires():
    job = manifests()[("PyTorchJob", "r1kit-train")]
    assert job["apiVersion"] == "kubeflow.org/v1"
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] >= 1
    for replica in specs.values():
        assert replica["restartPolicy"] in ("OnFailure", "Never", "Always", "ExitCode")
        [container] = replica["template"]["spec"]["containers"]
        assert container["name"] == "pytorch"  # the operator finds the training container by this name
        assert container["command"][:3] == ["python3", "-m", "torch.distributed.run"]
        gpus = container["resources"]["limits"]["nvidia.com/gpu"]
        assert str(gpus) == job["spec"]["nprocPerNode"]  # one process per GPU


def test_indexed_job_ranks_nodes_by_index_behind_a_headless_service():
    found = manifests()
    job, service = found[("Job", "r1kit-train-idx")], found[("Service", "r1kit-train")]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    assert (
        spec["template"]["spec"]["subdomain"] == service["metadata"]["name"]
        and service["spec"]["clusterIP"] == "None"
    )
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    script = spec["template"]["spec"]["containers"][0]["args"][0]
    # r1kit launch is the container's main process (exec), so the SIGTERM of a pre-emption reaches it and it
    # passes it to the ranks; the grace period leaves them time to save
    assert (
        script.startswith("exec r1kit launch ")
        and spec["template"]["spec"]["terminationGracePeriodSeconds"] >= 300
    )
    assert f"--nnodes {spec['completions']}" in script and '--node-rank "$JOB_COMPLETION_INDEX"' in script
    assert f"--master-addr {job['metadata']['name']}-0.{service['metadata']['name']}" in script


@pytest.mark.parametrize(
    "key", [("PyTorchJob", "r1kit-train"), ("Job", "r1kit-train-idx"), ("Deployment", "r1kit-serve")]
)
def test_pods_request_gpus_shared_memory_and_the_shared_volume(key):
    doc = manifests()[key]
    claims = {d["metadata"]["name"] for d in documents(K8S / "storage.yaml")}
    for spec in pod_specs(doc):
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] in claims
        for container in spec["containers"]:
            assert container["resources"]["requests"]["nvidia.com/gpu"] >= 1
            assert "/dev/shm" in {m["mountPath"] for m in container["volumeMounts"]}
            mounts = {m["name"] for m in container["volumeMounts"]}
            assert mounts <= volumes.keys()
        if "recipe" in volumes:
            assert volumes["recipe"]["configMap"]["name"] == "r1kit-recipe"


def test_data_rayjob_runs_the_ray_executor_on_a_cluster_kuberay_makes_for_it():
    job = manifests()[("RayJob", "r1kit-data-clean")]
    assert job["apiVersion"] == "ray.io/v1" and job["spec"]["shutdownAfterJobFinishes"] is True
    command = job["spec"]["entrypoint"].split()
    assert command[:3] == ["r1kit", "data", "clean"] and "--executor" in command
    assert command[command.index("--executor") + 1] == "ray"
    cluster = job["spec"]["rayClusterSpec"]
    pinned = re.search(r"^ARG RAY_VERSION=(\S+)", (DEPLOY / "Dockerfile.cpu").read_text(), re.M).group(1)
    assert cluster["rayVersion"] == pinned  # KubeRay's cluster and the image's Ray are one version
    claims = {d["metadata"]["name"] for d in documents(K8S / "storage.yaml")}
    paths = {command[command.index(flag) + 1] for flag in ("--input", "--out")}
    for spec in pod_specs(job):  # the head writes the output, the workers read the inputs: all mount /data
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] in claims
        assert volumes["shm"]["emptyDir"]["medium"] == "Memory"  # Ray's object store lives in /dev/shm
        [container] = spec["containers"]
        assert container["image"] == "r1kit-cpu"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts["/dev/shm"] == "shm" and all(p.startswith("/data/") for p in paths)
        assert mounts["/data"] == "data" and set(mounts.values()) <= volumes.keys()
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert {"mountPath": "/etc/r1kit", "name": "recipe"} in head["containers"][0]["volumeMounts"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "r1kit-cpu" in {i["name"] for i in kustomization["images"]}
    from r1kit.config import load_recipe

    overrides = [arg for i, arg in enumerate(command) if i and command[i - 1] == "--set"]
    assert load_recipe(K8S / "recipe.yaml", [*overrides, "data.executor=ray"]).data.ray.block_mb == 256


def test_serving_deployment_service_and_autoscaler_fit_together():
    found = manifests()
    deployment, service = found[("Deployment", "r1kit-serve")], found[("Service", "r1kit-serve")]
    hpa = found[("HorizontalPodAutoscaler", "r1kit-serve")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert "--host" in container["command"] and "0.0.0.0" in container["command"]
    # the key is required, and comes from a mounted secret: not the command line, not optional
    assert not any("key" in part for part in container["command"])
    pod = deployment["spec"]["template"]["spec"]
    [key_file] = [e["value"] for e in container["env"] if e["name"] == "R1KIT_API_KEY_FILE"]
    [mount] = [m for m in container["volumeMounts"] if key_file.startswith(m["mountPath"] + "/")]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["optional"] is False
    assert pod["terminationGracePeriodSeconds"] > 120  # serve.shutdown_timeout, to drain
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "r1kit-serve")
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert container["resources"]["requests"]["cpu"]  # CPU utilisation needs a request to scale on


def exported_metric_names() -> set[str]:
    """Every metric family r1kit's training, RL-health and serving registries expose, as Prometheus names."""
    from prometheus_client import CollectorRegistry

    from r1kit.config import RLAlertConfig
    from r1kit.serve.metrics import ServeMetrics
    from r1kit.train.monitor import PrometheusExporter
    from r1kit.train.rl_health import RLHealth

    class Engine:
        def stats(self):
            return {"queue_depth": 0, "batch_size": 0, "tokens_per_second": 0.0}

    names = set()
    exporter = PrometheusExporter("127.0.0.1", 0, 1)
    RLHealth(RLAlertConfig(), exporter.registry)
    serving = ServeMetrics(Engine())
    serving.requests.labels(
        route="/v1/chat/completions", status="200"
    ).inc()  # labelled series appear when used
    serving.latency.labels(route="/v1/chat/completions").observe(0.5)
    registries: list[CollectorRegistry] = [exporter.registry, serving.registry]
    for registry in registries:
        for family in registry.collect():
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
    return names


def test_grafana_dashboard_queries_metrics_r1kit_exports():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "r1kit.json").read_text())
    exported = exported_metric_names()
    queried = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queried.update(re.findall(r"r1kit_[a-z_]+", target["expr"]))
    assert queried and queried <= exported, queried - exported
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Training", "RL health (GRPO)", "Serving", "MFU", "Latency"} <= titles
    provisioning = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uids = {d["uid"] for d in provisioning["datasources"]}
    assert all(p["datasource"]["uid"] in uids for p in dashboard["panels"] if "datasource" in p)


def test_compose_stack_wires_the_server_prometheus_and_grafana():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"r1kit", "prometheus", "grafana"} <= services.keys()
    server = services["r1kit"]
    assert (ROOT / server["build"]["dockerfile"]).is_file()
    assert server["healthcheck"]["test"][-1].endswith("/health")
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), source
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port  # published on this machine only, like r1kit serve
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert "r1kit:8000" in targets  # the compose service name and the port the server listens on
    # the key is required: a secret file for the server and for Prometheus, which scrapes /metrics with it
    assert "R1KIT_API_KEY" not in server["environment"] and not any("key" in c for c in server["command"])
    secret = f"/run/secrets/{server['secrets'][0]}"
    assert server["environment"]["R1KIT_API_KEY_FILE"] == secret
    assert (
        server["secrets"][0] in services["prometheus"]["secrets"] and compose["secrets"][server["secrets"][0]]
    )
    [job] = [j for j in scrape["scrape_configs"] if "r1kit:8000" in j["static_configs"][0]["targets"]]
    assert job["authorization"]["credentials_file"] == secret


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_images_run_as_a_user_with_a_healthcheck_and_the_pinned_torch(name):
    text = (DEPLOY / name).read_text()
    pinned = re.search(r"TORCH_CPU \?= torch==([\d.]+)", (ROOT / "Makefile").read_text()).group(1)
    assert f"ARG TORCH_VERSION={pinned}" in text
    assert '"ray[data]==${RAY_VERSION}"' in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n.*CMD curl -fsS http://127.0.0.1:8000/health", text, re.M)
    assert re.search(r"^FROM \S+:\S+", text, re.M) and ":latest" not in text


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_the_base():
    done = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    rendered = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(done.stdout) if d}
    assert rendered == set(manifests()) | {("ConfigMap", "r1kit-recipe")}
