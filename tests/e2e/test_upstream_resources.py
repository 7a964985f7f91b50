"""Upstream-style custom resources on the real API server under our CRDs: accepted with strict field validation
(an unknown or pruned field is an error, not a warning), and read back as written plus upstream's defaults.

The resources (tests/data/upstream/resources.yaml) carry the fields of the operator's API that llmkube did not
model before, and values upstream's CRD takes but llmkube's typed API refuses at preview. The defaults expected
back are upstream's, from its committed field-path list (tests/data/upstream/v0.9.19.json), so a default our CRD
added, dropped or changed shows as a difference. The status the controller writes (conditions, phase, the GGUF
header, the gateway) goes through the status subresource and comes back unchanged too.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmkube_components import crds
from tests.e2e.cluster import get, kubectl, wait_until

pytestmark = pytest.mark.e2e

DATA = Path(__file__).parent.parent / "data" / "upstream"
NAMESPACE = "upstream-parity"
CRD_NAMES = ("models.inference.llmkube.dev", "inferenceservices.inference.llmkube.dev")


def resources() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DATA / "resources.yaml").read_text()) if doc]


def upstream_facts(kind: str) -> dict[str, dict[str, Any]]:
    facts: dict[str, dict[str, Any]] = json.loads((DATA / "v0.9.19.json").read_text())["kinds"][kind]
    return facts


def with_upstream_defaults(value: Any, path: str, facts: dict[str, dict[str, Any]]) -> Any:
    """``value`` (at ``path``) with the defaults upstream's CRD gives its unset fields, as the API server fills
    them in: in every object that is present, recursively."""
    if isinstance(value, list):
        return [with_upstream_defaults(item, f"{path}[]", facts) for item in value]
    if not isinstance(value, dict):
        return value
    out = {key: with_upstream_defaults(item, f"{path}.{key}", facts) for key, item in value.items()}
    prefix = f"{path}."
    for field, fact in facts.items():
        name = field.removeprefix(prefix)
        if field.startswith(prefix) and "." not in name and "[" not in name and "default" in fact and name not in out:
            out[name] = with_upstream_defaults(fact["default"], field, facts)
    return out


@pytest.fixture(scope="module")
def parity_cluster(cluster: dict[str, str]) -> Iterator[dict[str, str]]:
    """The local cluster with our CRDs installed by this module (and removed again at the end)."""
    existing = kubectl(cluster, "get", "crd", "-o", "name", check=False)
    assert not any(name in existing for name in CRD_NAMES), "another test left the LLMKube CRDs installed"
    kubectl(
        cluster, "create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": crds.all_crds()})
    )
    try:
        for name in CRD_NAMES:
            kubectl(cluster, "wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
        kubectl(cluster, "create", "namespace", NAMESPACE)
        yield cluster
    finally:
        kubectl(cluster, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=120s", check=False)
        kubectl(cluster, "delete", "crd", *CRD_NAMES, "--ignore-not-found", "--timeout=120s", check=False)


@pytest.mark.parametrize("resource", resources(), ids=lambda r: r["metadata"]["name"])
def test_accepted_strictly_and_read_back_unchanged(parity_cluster: dict[str, str], resource: dict[str, Any]) -> None:
    kind, name = resource["kind"], resource["metadata"]["name"]
    written = copy.deepcopy(resource)
    written["metadata"]["namespace"] = NAMESPACE
    # Strict field validation: a field our schema does not have fails the request instead of being pruned.
    kubectl(parity_cluster, "create", "--validate=strict", "-f", "-", stdin=json.dumps(written))
    stored = get(parity_cluster, kind.lower(), name, "-n", NAMESPACE)
    assert stored["spec"] == with_upstream_defaults(resource["spec"], "spec", upstream_facts(kind))


STATUS = {
    "Model": {
        "phase": "Ready",
        "acceleratorReady": True,
        "cacheKey": "3f2a9c0d1e4b5a67",
        "path": "/models/3f2a9c0d1e4b5a67/Qwen3.6-35B-A3B-Q4_K_M.gguf",
        "size": "21.2 GiB",
        "sha256": "0" * 64,
        "sourceETag": '"abc"',
        "sourceContentLength": 22766000000,
        "lastRevalidated": "2026-12-01T10:00:00Z",
        "lastUpdated": "2026-12-01T10:00:00Z",
        "stagedFiles": ["Qwen3.6-35B-A3B-Q4_K_M.gguf"],
        "gguf": {"architecture": "qwen3moe", "layerCount": 40, "tensorCount": 733, "fileVersion": 3},
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "observedGeneration": 1,
                "lastTransitionTime": "2026-12-01T10:00:00Z",
                "reason": "ModelPrefetched",
                "message": "model staged in the shared cache",
            }
        ],
    },
    "InferenceService": {
        "phase": "WaitingForGPU",
        "replicas": 0,
        "readyReplicas": 0,
        "desiredReplicas": 2,
        "effectivePriority": 100000,
        "queuePosition": 1,
        "schedulingStatus": "Waiting",
        "schedulingMessage": "no node has a free GPU",
        "waitingFor": "GPU",
        "modelReady": True,
        "mode": "chat",
        "endpoint": "http://qwen.upstream-parity.svc.cluster.local:8080/v1/chat/completions",
        "acceleration": {"device": "cuda", "layersOffloaded": 40, "layersTotal": 41},
        "gateway": {"routeReady": False, "modelName": "qwen3.6", "authEnabled": False},
        "lastUpdated": "2026-12-01T10:00:00Z",
        "conditions": [
            {
                "type": "RolloutDeferred",
                "status": "True",
                "lastTransitionTime": "2026-12-01T10:00:00Z",
                "reason": "PodsBusy",
                "message": "waiting for in-flight requests",
            }
        ],
    },
}


@pytest.mark.parametrize(("kind", "name"), [("Model", "qwen-s3"), ("InferenceService", "qwen")])
def test_the_controllers_status_writes_are_accepted(parity_cluster: dict[str, str], kind: str, name: str) -> None:
    wait_until(
        f"{kind} {name}", lambda: kubectl(parity_cluster, "get", kind.lower(), name, "-n", NAMESPACE, check=False)
    )
    patch = json.dumps({"status": STATUS[kind]})
    kubectl(
        parity_cluster,
        "patch",
        kind.lower(),
        name,
        "-n",
        NAMESPACE,
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    )
    assert get(parity_cluster, kind.lower(), name, "-n", NAMESPACE)["status"] == STATUS[kind]
