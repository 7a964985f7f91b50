"""The local control plane of tools/cluster for end-to-end tests: real etcd, API server, scheduler and
controller-manager, with KWOK playing one node per hardware profile in PROFILES.

tools/test (so CI) starts a fresh cluster before pytest and stops it afterwards, and passes its kubeconfig in
LLMKUBE_TEST_KUBECONFIG (binaries on LLMKUBE_TEST_CLUSTER_PATH). Run on their own, the tests start one in a
temporary folder on its own ports and stop it at the end; a developer's `tools/cluster` is left alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.e2e.required import required
from tests.pulumi_program import ROOT

TOOLS = ROOT / "tools"
# Keep in sync with tools/test: a dual-5060ti node, a smaller GPU node and a CPU node.
PROFILES = ("dual-rtx5060ti", "rtx4090", "cpu-only")
KUBECONFIG_ENV = "LLMKUBE_TEST_KUBECONFIG"
PATH_ENV = "LLMKUBE_TEST_CLUSTER_PATH"
# A port block (API server and the next four) away from tools/cluster's default 16443 and tools/test's 26443.
PORT = int(os.environ.get("LLMKUBE_TEST_CLUSTER_PORT", "36443"))


def _installed_path() -> str | None:
    """The cluster tools' bin directories if tools/setup-cluster has built them all, without building."""
    if os.environ.get(PATH_ENV):
        return os.environ[PATH_ENV]
    result = subprocess.run([TOOLS / "setup-cluster", "--installed"], capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def cluster_tools() -> str:
    """Call at module level: the binaries' PATH entries, or the module fails in CI / is skipped elsewhere."""
    return required(_installed_path(), "the local cluster's binaries are not built (tools/setup builds them)")


@pytest.fixture(scope="session")
def cluster() -> Iterator[dict[str, str]]:
    """Environment (PATH with kubectl, KUBECONFIG) of a running local cluster with the PROFILES nodes."""
    bin_path = cluster_tools()
    env = {**os.environ, "PATH": f"{bin_path}:{os.environ['PATH']}"}
    given = os.environ.get(KUBECONFIG_ENV)
    if given:
        env["KUBECONFIG"] = given
        yield env
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="llmkube-cluster-") as tmp:
        state = Path(tmp)
        env |= {"LLMKUBE_CLUSTER_DIR": str(state), "LLMKUBE_CLUSTER_PORT": str(PORT)}
        env["KUBECONFIG"] = str(state / "kubeconfig")
        try:
            start = subprocess.run(
                [TOOLS / "cluster", "start", *PROFILES], env=env, capture_output=True, text=True, timeout=300
            )
            if start.returncode != 0:
                logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(state.glob("logs/*.log")))
                raise AssertionError(f"tools/cluster start failed:\n{start.stderr}\n{logs}")
            yield env
        finally:
            subprocess.run([TOOLS / "cluster", "stop"], env=env, capture_output=True, text=True, timeout=120)


def kubectl(env: dict[str, str], *args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(["kubectl", *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def get(env: dict[str, str], *args: str) -> dict[str, Any]:
    return json.loads(kubectl(env, "get", "-o", "json", *args))


T = TypeVar("T")


def gone(env: dict[str, str], *args: str) -> bool:
    """Whether ``kubectl get ARGS`` finds nothing."""
    return not kubectl(env, "get", *args, "--ignore-not-found", "-o", "name", check=False).strip()


def wait_until(what: str, predicate: Callable[[], T], timeout: float = 90.0) -> T:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def delete_namespace(cluster: dict[str, str], namespace: str) -> None:
    """Delete a namespace with all it holds, and wait until it and its claims' volumes are gone (a kept cache claim
    included): the cluster is shared, and test_pulumi_local.py compares what it holds before and after its stack."""
    kubectl(cluster, "delete", "namespace", namespace, "--ignore-not-found", "--timeout=180s", check=False)
    wait_until("the namespace to be gone", lambda: gone(cluster, "namespace", namespace), timeout=180)

    def volumes_left() -> list[str]:
        return [
            v["metadata"]["name"]
            for v in get(cluster, "persistentvolumes")["items"]
            if (v["spec"].get("claimRef") or {}).get("namespace") == namespace
        ]

    wait_until("the claims' volumes to be deleted", lambda: not volumes_left(), timeout=120)


def ready(obj: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj.get("status", {}).get("conditions", []))


def unschedulable_reason(pod: dict[str, Any]) -> str | None:
    """The scheduler's message when it could not place the pod, else None."""
    for c in pod.get("status", {}).get("conditions", []):
        if c["type"] == "PodScheduled" and c["status"] == "False":
            return c.get("message", "")
    return None
