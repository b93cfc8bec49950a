"""Run each rendered container (its command, args and env) as a local process and probe it as the kubelet would.

In-cluster addresses become loopback ones: Service names become 127.0.0.1 with free ports, the pod's own ports
become free ports, volume mount paths become folders under tmp_path, and Redis is a real redis-server started
with the password the Secret would hold. A server passes when the gRPC readiness probe it declares (port and
service name) answers SERVING; the retraining Job passes when it exits 0 and has published a verifier version.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.redis_launcher import EmbeddedRedis, free_port
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
            if name == "LEGIBILITY_HOST":
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
    client = redis.Redis(port=loopback.redis_port, password=password)
    try:
        record = json.loads(client.get("legibility:model:verifier:current"))
    finally:
        client.close()
    assert record["version"] == 1
    stored = Path(loopback.path(workload, "/artifacts"))
    assert (stored / record["uri"].removeprefix("artifact://")).is_dir()
