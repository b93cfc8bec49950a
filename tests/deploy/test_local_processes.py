"""Run each rendered container (its command, args and env) as a local process and probe it as the kubelet would.

In-cluster addresses become loopback ones: Service names become 127.0.0.1 with free ports, the pod's own ports
become free ports, volume mount paths become folders under tmp_path, and Redis is a real redis-server started
with the password the Secret would hold. A server passes when the gRPC readiness probe it declares (port and
service name) answers SERVING; the retraining Job passes when it exits 0 and has published a verifier version; the
retraining worker passes when the HTTP probe it declares (/metrics) answers 200 and it serves a request queued on the
learner's stream by publishing the version asked for.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import redis
import redis.asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.artifacts import ArtifactStore
from services.common.bundled_models import BUNDLED_WEAK
from services.common.ports import free_port
from services.common.redis_launcher import EmbeddedRedis
from services.jobs.verifier_training.queue import RetrainQueue
from services.jobs.verifier_training.requests import (
    PinnedSource,
    RetrainRequest,
    RetrainResult,
    TrainingOptions,
    pin_samples,
)
from tests.deploy.rendering import (
    Doc,
    Workload,
    expand_all,
    image_entrypoint,
    legibility_workloads,
    render,
    resolved_env,
)

OVERLAY = "cpu"
READY_TIMEOUT_S = 90.0
JOB_TIMEOUT_S = 100.0
JOB_ARGS = ["--steps", "3", "--problems-per-batch", "4"]
WORKER_STEPS = 3


@dataclass
class Loopback:
    """Maps in-cluster names and paths to this machine: ports, Service addresses, volumes."""

    docs: tuple[Doc, ...]
    root: Path
    redis_port: int
    ports: dict[tuple[str, int], int] = field(default_factory=dict)

    def pod_port(self, component: str, container_port: int) -> int:
        """A free loopback port standing for a container port of a component (stable within one test)."""
        key = (component, container_port)
        if key not in self.ports:
            self.ports[key] = free_port()
        return self.ports[key]

    def service_addresses(self) -> dict[str, str]:
        """'<service>:<port>' (short and FQDN forms) → '127.0.0.1:<free port>'."""
        addresses = {}
        for svc in (d for d in self.docs if d["kind"] == "Service"):
            name, namespace = svc["metadata"]["name"], svc["metadata"].get("namespace", "default")
            component = svc["spec"]["selector"]["app.kubernetes.io/component"]
            for port in svc["spec"]["ports"]:
                if component == "redis":
                    local = self.redis_port
                else:
                    local = self.pod_port(component, self._target_port(component, port["targetPort"]))
                for host in (
                    name,
                    f"{name}.{namespace}",
                    f"{name}.{namespace}.svc",
                    f"{name}.{namespace}.svc.cluster.local",
                ):
                    addresses[f"{host}:{port['port']}"] = f"127.0.0.1:{local}"
        return addresses

    def _target_port(self, component: str, target: int | str) -> int:
        if isinstance(target, int):
            return target
        for doc in self.docs:
            labels = doc.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
            if labels.get("app.kubernetes.io/component") == component:
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    for port in container.get("ports", []):
                        if port["name"] == target:
                            return port["containerPort"]
        raise KeyError(f"{component} has no port named {target}")

    def path(self, workload: Workload, in_pod: str) -> str:
        """A mount path in the pod → a folder under root (shared PVCs shared, emptyDirs per workload)."""
        for mount in sorted(workload.container.get("volumeMounts", []), key=lambda m: -len(m["mountPath"])):
            prefix = mount["mountPath"].rstrip("/")
            if in_pod == prefix or in_pod.startswith(prefix + "/"):
                volume = workload.volume(mount["name"])
                claim = volume.get("persistentVolumeClaim", {}).get("claimName")
                base = self.root / ("pvc-" + claim if claim else f"{workload.name}-{mount['name']}")
                base.mkdir(parents=True, exist_ok=True)
                return str(base / in_pod[len(prefix) :].lstrip("/"))
        return in_pod

    def env(self, workload: Workload, env: dict[str, str]) -> dict[str, str]:
        own_ports = {p["containerPort"] for p in workload.container.get("ports", [])}
        addresses = self.service_addresses()
        local = {}
        for name, value in env.items():
            if name in ("LEGIBILITY_HOST", "LEGIBILITY_METRICS_HOST"):
                assert value == "0.0.0.0", "the services must bind all interfaces in a pod"
                value = "127.0.0.1"
            elif value.isdigit() and int(value) in own_ports:
                value = str(self.pod_port(workload.component, int(value)))
            elif value.startswith("/"):
                value = self.path(workload, value)
            else:
                for cluster, loop in addresses.items():
                    value = re.sub(rf"(?<=//){re.escape(cluster)}\b|^{re.escape(cluster)}$", loop, value)
            local[name] = value
        return local


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Loopback, str]]:
    """A real redis-server with the Secret's password, and the loopback map around it."""
    password = secrets.token_hex(16)
    server = EmbeddedRedis(password=password, data_dir=tmp_path / "redis")
    server.start()
    try:
        yield Loopback(render(OVERLAY), tmp_path, server.port), password
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tiny_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samples") / "samples.jsonl"
    subprocess.run(
        [_executable("legibility"), "toy", "samples", "--out", str(out), "--problems", "40", "--per-model", "2"],
        check=True,
        capture_output=True,
    )
    return out


def _workload(component: str) -> Workload:
    (found,) = [w for w in legibility_workloads(OVERLAY) if w.component == component]
    return found


def _executable(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def _process_spec(workload: Workload, cluster: Loopback, password: str) -> tuple[list[str], dict[str, str], str]:
    """argv, environment and working directory of the container, mapped to loopback."""
    in_pod = resolved_env(cluster.docs, workload.container, {"legibility-redis": {"password": password}})
    argv = expand_all(workload.container.get("command") or image_entrypoint(), in_pod)
    argv += expand_all(workload.container.get("args", []), in_pod)
    argv[0] = _executable(argv[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEGIBILITY_")}
    env |= cluster.env(workload, in_pod) | {"HF_HUB_OFFLINE": "1"}
    workdir = cluster.path(workload, workload.container.get("workingDir", "/"))
    if workdir == "/":
        workdir = str(cluster.root / f"{workload.name}-cwd")
    Path(workdir).mkdir(parents=True, exist_ok=True)
    return argv, env, workdir


def _health(port: int, service: str) -> int | None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        except grpc.RpcError:
            return None
    return reply.status


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def _http_probe_url(workload: Workload, cluster: Loopback, probe: str) -> str:
    """The loopback URL of an httpGet probe (its port by name or number)."""
    get = workload.container[probe]["httpGet"]
    port = get["port"]
    if isinstance(port, str):
        port = next(p["containerPort"] for p in workload.container["ports"] if p["name"] == port)
    return f"http://127.0.0.1:{cluster.pod_port(workload.component, port)}{get.get('path', '/')}"


@pytest.mark.slow
@pytest.mark.parametrize("component", ["verifier", "weak-model", "learner"])
def test_server_container_passes_its_readiness_probe(component: str, cluster, tmp_path: Path) -> None:
    loopback, password = cluster
    workload = _workload(component)
    argv, env, workdir = _process_spec(workload, loopback, password)
    probe = workload.container["readinessProbe"]["grpc"]
    port = loopback.pod_port(component, probe["port"])
    log_path = tmp_path / f"{component}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            status = None
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline and proc.poll() is None:
                status = _health(port, probe["service"])
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.5)
            assert status == health_pb2.HealthCheckResponse.SERVING, log_path.read_text()[-4000:]
            liveness = workload.container["livenessProbe"]["grpc"]
            assert _health(loopback.pod_port(component, liveness["port"]), liveness.get("service", "")) == 1
            # What the kubelet does on pod deletion: SIGTERM, then the server drains and exits cleanly.
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log_path.read_text()[-4000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_retraining_job_trains_and_publishes(cluster, tiny_samples: Path, tmp_path: Path) -> None:
    loopback, password = cluster
    workload = _workload("train-verifier")
    argv, env, workdir = _process_spec(workload, loopback, password)
    # The template's samples are artifact:// uris of stored rounds; here a local file, and a few steps.
    argv += ["--samples", str(tiny_samples), *JOB_ARGS]
    done = subprocess.run(argv, env=env, cwd=workdir, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    _assert_verifier_v1_published(loopback, password, workload)


@pytest.mark.slow
def test_retraining_worker_passes_its_probes_and_serves_a_queued_request(
    cluster, tiny_samples: Path, tmp_path: Path
) -> None:
    loopback, password = cluster
    workload = _workload("train-verifier-worker")
    argv, env, workdir = _process_spec(workload, loopback, password)
    # The learner queues on its own LEGIBILITY_RETRAIN_STREAM: the worker must read that one.
    learner_env = resolved_env(loopback.docs, _workload("learner").container, {"legibility-redis": {"password": ""}})
    assert learner_env["LEGIBILITY_RETRAIN"] == "queue"
    stream = learner_env["LEGIBILITY_RETRAIN_STREAM"]
    readiness = _http_probe_url(workload, loopback, "readinessProbe")
    log_path = tmp_path / "train-verifier-worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            status = None
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline and proc.poll() is None:
                status = _http_status(readiness)
                if status == 200:
                    break
                time.sleep(0.5)
            assert status == 200, log_path.read_text()[-4000:]
            assert _http_status(_http_probe_url(workload, loopback, "livenessProbe")) == 200
            result = asyncio.run(_retrain_through_the_queue(loopback, password, stream, tiny_samples))
            assert result.version == 1, (result, log_path.read_text()[-4000:])
            assert result.trained_by
            with urllib.request.urlopen(readiness, timeout=2) as reply:
                metrics = reply.read().decode()
            assert 'legibility_retrain_requests_total{outcome="published"} 1.0' in metrics
            # What the kubelet does on pod deletion: SIGTERM; an idle worker exits cleanly at once.
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log_path.read_text()[-4000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    _assert_verifier_v1_published(loopback, password, workload)


def _assert_verifier_v1_published(loopback: Loopback, password: str, workload: Workload) -> None:
    """The registry's current verifier is v1, and its checkpoint is in the workload's artifact volume."""
    client = redis.Redis(port=loopback.redis_port, password=password)
    try:
        record = json.loads(client.get("legibility:model:verifier:current"))
    finally:
        client.close()
    assert record["version"] == 1
    stored = Path(loopback.path(workload, "/artifacts"))
    assert (stored / record["uri"].removeprefix("artifact://")).is_dir()


async def _retrain_through_the_queue(loopback: Loopback, password: str, stream: str, samples: Path) -> RetrainResult:
    """What the learner does in queue mode: submit round 0's request for verifier v1 and wait for its result."""
    store = ArtifactStore(Path(loopback.path(_workload("learner"), "/artifacts")))
    request = RetrainRequest(
        request_id=RetrainRequest.id_for("deploy-test", 0),
        run_id="deploy-test",
        round=0,
        model_name="verifier",
        target_version=1,
        samples=[pin_samples(store, str(samples))],
        init_model=PinnedSource(uri=str(BUNDLED_WEAK)),
        training=TrainingOptions(steps=WORKER_STEPS),
    )
    client = redis.asyncio.Redis(port=loopback.redis_port, password=password)
    try:
        queue = RetrainQueue(client, stream)
        assert await queue.submit(request)
        return await queue.wait(request.request_id, timeout_s=JOB_TIMEOUT_S)
    finally:
        await client.aclose()
