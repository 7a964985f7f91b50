"""The local control plane of tools/cluster: real etcd, API server, scheduler and controller-manager, KWOK nodes.

The cluster runs in a temporary state folder on its own ports, so a developer's running cluster is left alone.
Its fake nodes come from the hardware profiles: a pod asking 2 GPUs and 48Gi of host memory must be placed by
the real scheduler on the dual-rtx5060ti node (the rtx4090 and cpu-only nodes do not fit it), and become Ready
under KWOK; one asking more than any node has stays Pending.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from tests.e2e.required import required
from tests.pulumi_program import ROOT

pytestmark = pytest.mark.e2e

TOOLS = ROOT / "tools"
# A port block (API server and the next four) away from tools/cluster's default 16443.
PORT = int(os.environ.get("LLMKUBE_TEST_CLUSTER_PORT", "26443"))
PROFILES = ("dual-rtx5060ti", "rtx4090", "cpu-only")


def _installed_path() -> str | None:
    """The cluster tools' bin directories if tools/setup-cluster has built them all, without building."""
    result = subprocess.run([TOOLS / "setup-cluster", "--installed"], capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


BIN_PATH = required(_installed_path(), "the local cluster's binaries are not built (tools/setup builds them)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    state = tmp_path_factory.mktemp("cluster")
    env = {
        **os.environ,
        "PATH": f"{BIN_PATH}:{os.environ['PATH']}",
        "LLMKUBE_CLUSTER_DIR": str(state),
        "LLMKUBE_CLUSTER_PORT": str(PORT),
    }
    env["KUBECONFIG"] = str(state / "kubeconfig")
    try:
        start = subprocess.run(
            [TOOLS / "cluster", "start", *PROFILES], env=env, capture_output=True, text=True, timeout=300
        )
        if start.returncode != 0:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((state / "logs").glob("*.log")))
            raise AssertionError(f"tools/cluster start failed:\n{start.stderr}\n{logs}")
        yield env
    finally:
        subprocess.run([TOOLS / "cluster", "stop"], env=env, capture_output=True, text=True, timeout=120)


def kubectl(env: dict[str, str], *args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(["kubectl", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def get(env: dict[str, str], *args: str) -> dict:
    return json.loads(kubectl(env, "get", "-o", "json", *args))


T = TypeVar("T")


def wait_until(what: str, predicate: Callable[[], T], timeout: float = 90.0) -> T:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def ready(obj: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))


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
    assert dual["status"]["capacity"]["cpu"] == "16"
    assert dual["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-GeForce-RTX-5060-Ti"
    assert dual["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert {"key": "nvidia.com/gpu", "effect": "NoSchedule"} in dual["spec"]["taints"]
    assert nodes["kwok-rtx4090"]["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in nodes["kwok-cpu-only"]["status"]["allocatable"]
    # Only the profiles' taints: node.kubernetes.io/not-ready is the node lifecycle controller's, until it sees Ready.
    cpu_taints = nodes["kwok-cpu-only"]["spec"].get("taints", [])
    assert [t for t in cpu_taints if not t["key"].startswith("node.kubernetes.io/")] == []


def test_gpu_pod_lands_on_the_node_that_fits_and_becomes_ready(cluster: dict[str, str]) -> None:
    create_when_default_sa_exists(cluster, gpu_pod("fits-dual", 2, "48Gi"))

    def pod_ready() -> dict[str, Any] | None:
        pod = get(cluster, "pod", "fits-dual", "-n", "default")
        return pod if ready(pod) else None

    pod = wait_until("the pod to be Ready", pod_ready)
    assert pod["spec"]["nodeName"] == "kwok-dual-rtx5060ti"
    assert pod["status"]["phase"] == "Running"


def test_pod_larger_than_any_node_stays_pending(cluster: dict[str, str]) -> None:
    create_when_default_sa_exists(cluster, gpu_pod("too-big", 4, "48Gi"))

    def unschedulable() -> str | None:
        pod = get(cluster, "pod", "too-big", "-n", "default")
        for c in pod.get("status", {}).get("conditions", []):
            if c["type"] == "PodScheduled" and c["status"] == "False":
                return c.get("message", "")
        return None

    message = wait_until("the scheduler to report the pod unschedulable", unschedulable)
    assert "nvidia.com/gpu" in message, message
    pod = get(cluster, "pod", "too-big", "-n", "default")
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")
