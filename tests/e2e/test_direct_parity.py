"""The fields of LLMKube API parity in delivery direct, through the real Pulumi engine and provider onto the local
cluster's API server: a stack whose service uses speculative decoding with a draft Model, a reasoning budget,
metadata overrides, priority, eviction protection, a disruption budget, topology spread, env, extra volumes,
pull secrets, a startup probe and a Gateway API route, and whose model is prefetched.

What is shown: `pulumi up` succeeds, the API server holds every object we render for those fields (the
HTTPRoute against the Gateway API's own CRD, from its Go module: tools/setup-crds), the Deployment's pod carries
them and is scheduled, and `pulumi destroy` removes them but the PriorityClass, kept on purpose (other stacks'
pods may name it). KWOK runs no container, so llama-server's side of these flags is shown by
tests/e2e/test_llama_server_flags.py instead.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import get, kubectl, wait_until
from tests.e2e.pulumi_project import ClusterStack, copy_project, pulumi_cli
from tests.e2e.required import required
from tests.pulumi_program import ROOT

pytestmark = pytest.mark.e2e

STACK = "parity"
NAMESPACE = "llmkube-parity"
SERVICE = "qwen36-hybrid"
MODEL = "qwen36-35b-a3b"


def crd_folder() -> Path:
    result = subprocess.run([ROOT / "tools" / "setup-crds", "--installed"], capture_output=True, text=True)
    folder = result.stdout.strip() if result.returncode == 0 else None
    return Path(required(folder, "the Gateway API CRDs are not fetched (tools/setup runs tools/setup-crds)"))


def stack_config() -> dict[str, Any]:
    """The local stack, in its own namespace, with a draft model and the parity fields on its service."""
    local = yaml.safe_load((ROOT / "stacks" / "Pulumi.local.yaml").read_text())
    dev = yaml.safe_load((ROOT / "stacks" / "Pulumi.dev.yaml").read_text())["config"]
    config = local["config"]
    config["llmkube:namespace"] = NAMESPACE
    config["llmkube:models"]["draft"] = next(iter(dev["llmkube:models"].values()))
    config["llmkube:models"][MODEL]["prefetch"] = True
    config["llmkube:services"][SERVICE].update(
        {
            "speculativeDecoding": {"type": "draft", "draftModelRef": "draft", "nDraftMax": 4},
            "reasoningBudget": 0,
            "metadataOverrides": ["qwen3moe.expert_used_count=int:8"],
            "priority": "high",
            "evictionProtection": True,
            "disruption": {"protectStartup": True},
            "revisionHistoryLimit": 2,
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
            ],
            "env": [{"name": "GGML_SCHED_MAX_COPIES", "value": "1"}],
            "extraVolumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}],
            "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            "imagePullSecrets": [{"name": "registry"}],
            "probeOverrides": {
                "startup": {
                    "httpGet": {"path": "/health", "port": "http"},
                    "periodSeconds": 10,
                    "failureThreshold": 720,
                }
            },
            "endpoint": {"gateway": {"gatewayRef": {"name": "inference"}, "modelName": "qwen3.6"}},
        }
    )
    return local


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, cluster: dict[str, str]) -> Iterator[ClusterStack]:
    # Only the Gateway API's: the folder also holds the Prometheus Operator's and KEDA's CRDs, which
    # test_local_cluster_observability.py installs and deletes itself.
    crds = sorted(crd_folder().glob("*.gateway.networking.k8s.io.yaml"))
    files = [arg for crd in crds for arg in ("-f", str(crd))]
    kubectl(cluster, "create", *files)
    project = copy_project(tmp_path_factory.mktemp("parity"))
    (project / "stacks" / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(stack_config(), sort_keys=False))
    stack = ClusterStack(project, cluster, STACK)
    try:
        for crd in crds:
            kubectl(cluster, "wait", "--for=condition=Established", f"crd/{crd.stem}", "--timeout=60s")
        stack.pulumi("stack", "init")
        stack.pulumi("config", "set", "kubernetes:kubeconfig", cluster["KUBECONFIG"])
        stack.pulumi("up", "--yes")
        yield stack
    finally:
        pulumi_cli(project, "destroy", "--yes", "--stack", STACK, check=False)
        kubectl(cluster, "delete", "priorityclass", "llmkube-high", "--ignore-not-found", check=False)
        kubectl(cluster, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=120s", check=False)
        kubectl(cluster, "delete", *files, "--ignore-not-found", "--timeout=120s", check=False)


def test_the_api_server_holds_what_the_parity_fields_render(deployed: ClusterStack) -> None:
    route = get(deployed.cluster, "httproute", SERVICE, "-n", NAMESPACE)
    assert route["spec"]["parentRefs"][0]["name"] == "inference"
    assert route["spec"]["rules"][0]["matches"][0]["headers"] == [
        {"type": "Exact", "name": "x-ai-eg-model", "value": "qwen3.6"}
    ]
    budget = get(deployed.cluster, "poddisruptionbudget", SERVICE, "-n", NAMESPACE)
    assert budget["spec"]["maxUnavailable"] == 1
    priority = get(deployed.cluster, "priorityclass", "llmkube-high")
    assert priority["value"] == 100000
    job = get(deployed.cluster, "job", f"{MODEL}-prefetch", "-n", NAMESPACE)
    assert [c["name"] for c in job["spec"]["template"]["spec"]["initContainers"]][-1] == "model-downloader"


def test_the_pod_carries_the_fields_and_is_scheduled(deployed: ClusterStack) -> None:
    deployment = get(deployed.cluster, "deployment", SERVICE, "-n", NAMESPACE)
    assert deployment["spec"]["revisionHistoryLimit"] == 2
    pod_spec = deployment["spec"]["template"]["spec"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["karpenter.sh/do-not-disrupt"] == "true"
    assert pod_spec["priorityClassName"] == "llmkube-high"
    assert pod_spec["imagePullSecrets"] == [{"name": "registry"}]
    assert pod_spec["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
    server = pod_spec["containers"][0]
    args = server["args"]
    assert args[args.index("--spec-type") + 1] == "draft-simple"
    assert args[args.index("-md") + 1].endswith("/Llama-3.2-1B-Instruct-Q4_K_M.gguf")
    assert args[args.index("--reasoning-budget") + 1] == "0"
    assert {"name": "GGML_SCHED_MAX_COPIES", "value": "1"} in server["env"]
    assert {"name": "scratch", "mountPath": "/scratch"} in server["volumeMounts"]
    assert server["startupProbe"]["failureThreshold"] == 720
    # The draft model is downloaded by its own init container, beside the served model's.
    assert "draft-model-downloader" in [c["name"] for c in pod_spec["initContainers"]]

    def running() -> list[dict[str, Any]]:
        pods = get(deployed.cluster, "pods", "-n", NAMESPACE, "-l", f"app={SERVICE}")["items"]
        return [p for p in pods if p["status"].get("phase") == "Running"]

    (pod,) = wait_until("the server pod to run", running)
    assert pod["spec"]["nodeName"]


def test_destroy_keeps_the_priority_class_only(deployed: ClusterStack) -> None:
    deployed.pulumi("destroy", "--yes")
    assert kubectl(deployed.cluster, "get", "deployment,pdb,httproute", "-n", NAMESPACE, "-o", "name") == ""
    # The prefetch Job is registered with skipAwait, which skips the wait for its deletion too: destroy returns
    # while the API server still finishes it (foreground deletion), so it has to go, not be gone already.
    wait_until(
        "the prefetch Job to be deleted",
        lambda: kubectl(deployed.cluster, "get", "job", "-n", NAMESPACE, "-o", "name") == "",
        timeout=60,
    )
    assert get(deployed.cluster, "priorityclass", "llmkube-high")["value"] == 100000
