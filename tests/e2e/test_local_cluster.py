"""The local control plane of tools/cluster: real etcd, API server, scheduler and controller-manager, KWOK nodes.

The cluster is the one tools/test starts (tests/e2e/cluster.py). Its fake nodes come from the hardware
profiles: a pod asking 2 GPUs and 48Gi of host memory must be placed by the real scheduler on the
dual-rtx5060ti node (the rtx4090 and cpu-only nodes do not fit it), and become Ready under KWOK; one asking
more than any node has stays Pending. A claim without a storage class is provisioned by the default class.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from llmkube_components.cluster import ClusterReader
from tests.e2e.cluster import PROFILES, cluster_tools, get, kubectl, ready, unschedulable_reason, wait_until

pytestmark = pytest.mark.e2e

cluster_tools()


def gpu_pod(name: str, gpus: int, memory: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "containers": [
                    {
                        "name": "server",
                        "image": "ghcr.io/ggml-org/llama.cpp:server-cuda13",
                        "resources": {
                            "requests": {"cpu": "1", "memory": memory, "nvidia.com/gpu": str(gpus)},
                            "limits": {"memory": memory, "nvidia.com/gpu": str(gpus)},
                        },
                    }
                ],
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
        }
    )


def create_when_default_sa_exists(env: dict[str, str], manifest: str) -> None:
    # The controller-manager creates the namespace's default ServiceAccount shortly after start; until then
    # the ServiceAccount admission plugin refuses pods.
    def attempt() -> bool:
        result = subprocess.run(
            ["kubectl", "create", "-f", "-"], env=env, input=manifest, capture_output=True, text=True, timeout=60
        )
        if result.returncode == 0:
            return True
        assert "serviceaccount" in result.stderr.lower(), result.stderr
        return False

    wait_until("the default ServiceAccount", attempt, timeout=60)


@pytest.fixture
def created(cluster: dict[str, str]) -> Iterator[list[str]]:
    """Objects (``pod/name``) a test creates in the default namespace, deleted after it however it ends: the
    cluster is shared with the other end-to-end tests, and a pod left holding GPUs would fail them."""
    refs: list[str] = []
    yield refs
    for ref in refs:
        kubectl(cluster, "delete", ref, "-n", "default", "--ignore-not-found", "--timeout=60s", check=False)


def test_api_server_is_ready(cluster: dict[str, str]) -> None:
    assert kubectl(cluster, "get", "--raw", "/readyz").strip() == "ok"
    version = json.loads(kubectl(cluster, "get", "--raw", "/version"))
    assert version["gitVersion"].startswith("v1.37.")


def test_fake_nodes_come_from_the_profiles(cluster: dict[str, str]) -> None:
    def nodes_ready() -> dict[str, dict] | None:
        items = {n["metadata"]["name"]: n for n in get(cluster, "nodes")["items"]}
        return items if set(items) == {f"kwok-{p}" for p in PROFILES} and all(map(ready, items.values())) else None

    nodes = wait_until("the fake nodes to be Ready", nodes_ready)
    dual = nodes["kwok-dual-rtx5060ti"]
    assert dual["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert dual["status"]["capacity"]["memory"] == "64Gi"
    assert dual["status"]["allocatable"]["memory"] == "60Gi"  # less the profile's reserved.hostMemory (4Gi)
    assert dual["status"]["capacity"]["cpu"] == "16"
    assert dual["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-GeForce-RTX-5060-Ti"
    assert dual["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert {"key": "nvidia.com/gpu", "effect": "NoSchedule"} in dual["spec"]["taints"]
    assert nodes["kwok-rtx4090"]["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in nodes["kwok-cpu-only"]["status"]["allocatable"]
    # Only the profiles' taints: node.kubernetes.io/not-ready is the node lifecycle controller's, until it sees Ready.
    cpu_taints = nodes["kwok-cpu-only"]["spec"].get("taints", [])
    assert [t for t in cpu_taints if not t["key"].startswith("node.kubernetes.io/")] == []


def test_gpu_pod_lands_on_the_node_that_fits_and_becomes_ready(cluster: dict[str, str], created: list[str]) -> None:
    created.append("pod/fits-dual")
    create_when_default_sa_exists(cluster, gpu_pod("fits-dual", 2, "48Gi"))

    def pod_ready() -> dict[str, Any] | None:
        pod = get(cluster, "pod", "fits-dual", "-n", "default")
        return pod if ready(pod) else None

    pod = wait_until("the pod to be Ready", pod_ready)
    assert pod["spec"]["nodeName"] == "kwok-dual-rtx5060ti"
    assert pod["status"]["phase"] == "Running"
    # What the preview-time node check reads sees the same: the nodes, and the pod holding the GPUs.
    nodes = {n.name: n for n in ClusterReader(cluster["KUBECONFIG"], None).nodes()}
    assert set(nodes) == {f"kwok-{p}" for p in PROFILES}
    assert nodes["kwok-dual-rtx5060ti"].allocatable["nvidia.com/gpu"] == "2"
    (held,) = [p for p in ClusterReader(cluster["KUBECONFIG"], None).pods() if p.name == "fits-dual"]
    assert (held.node, held.requests["nvidia.com/gpu"], held.requests["memory"]) == (
        "kwok-dual-rtx5060ti",
        2,
        48 * 2**30,
    )


def test_pod_larger_than_any_node_stays_pending(cluster: dict[str, str], created: list[str]) -> None:
    created.append("pod/too-big")
    create_when_default_sa_exists(cluster, gpu_pod("too-big", 4, "48Gi"))

    message = wait_until(
        "the scheduler to report the pod unschedulable",
        lambda: unschedulable_reason(get(cluster, "pod", "too-big", "-n", "default")),
    )
    assert "nvidia.com/gpu" in message, message
    pod = get(cluster, "pod", "too-big", "-n", "default")
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")
    # Unbound, it holds nothing: the node check's pod list leaves it out.
    assert "too-big" not in {p.name for p in ClusterReader(cluster["KUBECONFIG"], None).pods()}


def test_a_claim_without_storage_class_binds_and_its_volume_goes_with_it(
    cluster: dict[str, str], created: list[str]
) -> None:
    # The model cache's claim names no class by default: the cluster's default class must provision it, or
    # the pods mounting it are never scheduled.
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "cache-probe", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "100Gi"}}},
    }
    created.append("pvc/cache-probe")
    kubectl(cluster, "create", "-f", "-", stdin=json.dumps(claim))
    bound = wait_until(
        "the claim to be Bound",
        lambda: (pvc := get(cluster, "pvc", "cache-probe", "-n", "default"))["status"].get("phase") == "Bound" and pvc,
    )
    volume = bound["spec"]["volumeName"]
    assert get(cluster, "pv", volume)["spec"]["capacity"]["storage"] == "100Gi"
    kubectl(cluster, "delete", "pvc", "cache-probe", "-n", "default")
    wait_until("the volume to be deleted", lambda: not kubectl(cluster, "get", "pv", volume, check=False).strip())
