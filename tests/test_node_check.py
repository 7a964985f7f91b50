"""The preview-time node check of Platform: a service no node of the target cluster can run is said so, with
the reason per node, and is deployed without Pulumi waiting out its timeout; the others are awaited as usual.

The cluster is faked here (cluster.read_nodes); tests/e2e/test_pulumi_local.py runs the same against a real
API server and scheduler.
"""

from __future__ import annotations

from typing import Any

import pytest

from llmkube_components import cluster
from tests.pulumi_program import RecordingMocks, stack_config
from tests.test_components import run

DUAL = cluster.Node(
    name="kwok-dual-rtx5060ti",
    labels={"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-5060-Ti"},
    taints=({"key": "nvidia.com/gpu", "effect": "NoSchedule"},),
    allocatable={"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "2", "pods": "110"},
)
CPU = cluster.Node(name="kwok-cpu-only", allocatable={"cpu": "8", "memory": "32Gi", "pods": "110"})

# The local stack, on a profile claiming four GPUs (the cluster has a node with two) and a service using them.
CONFIG = {
    **stack_config("local"),
    "llmkube:hardware": {"extends": "dual-rtx5060ti", "gpu": {"count": 4}},
    "llmkube:services": {
        **stack_config("local")["llmkube:services"],
        "too-big": {"modelRef": "qwen36-35b-a3b", "contextSize": 8192, "resources": {"gpu": 4, "cpu": "8"}},
    },
}


@pytest.fixture
def nodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str | None, str | None]]:
    """The fake cluster; records the kubeconfig and context each read asked for."""
    asked: list[tuple[str | None, str | None]] = []

    def read_nodes(kubeconfig: str | None, context: str | None, timeout: float = 5.0) -> list[cluster.Node]:
        asked.append((kubeconfig, context))
        return [CPU, DUAL]

    monkeypatch.setenv(cluster.NODE_CHECK_ENV, "1")
    monkeypatch.setattr(cluster, "read_nodes", read_nodes)
    return asked


def deployment_annotations(mocks: RecordingMocks, kind: str, name: str) -> dict[str, str]:
    (obj,) = [r for r in mocks.resources if r.kind == kind and r.object_name == name]
    return obj.inputs["metadata"].get("annotations") or {}


def test_a_service_no_node_can_run_is_said_at_preview_and_not_awaited(
    nodes: list[tuple[str | None, str | None]], caplog: pytest.LogCaptureFixture
) -> None:
    def check(platform: Any, mocks: RecordingMocks) -> None:
        services = platform.services
        assert services["qwen36-hybrid"]["scheduling"] == "fits: kwok-dual-rtx5060ti"
        pending = services["too-big"]["scheduling"]
        assert pending.startswith("Pending: no node can run it: kwok-cpu-only: "), pending
        assert "kwok-dual-rtx5060ti: nvidia.com/gpu 4 asked, 2 allocatable" in pending, pending
        # Not awaited: the Deployment and its Service; the one that fits is awaited as usual.
        for kind in ("Deployment", "Service"):
            assert deployment_annotations(mocks, kind, "too-big") == {"pulumi.com/skipAwait": "true"}
            assert "pulumi.com/skipAwait" not in deployment_annotations(mocks, kind, "qwen36-hybrid")

    with caplog.at_level("WARNING"):
        run(CONFIG, check)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        w.startswith("llmkube:services.too-big: its pod will stay Pending, no node can run it: kwok-cpu-only")
        for w in warnings
    ), warnings
    # The provider's own settings: the stack's kubernetes:kubeconfig, no context.
    assert nodes == [(".state/cluster/kubeconfig", None)]


@pytest.mark.parametrize(
    "setting",
    [
        {"kubernetes:renderYamlToDirectory": "rendered/x"},  # nothing to ask: manifests go to a folder
        {"env": "0"},  # LLMKUBE_NODE_CHECK=0
    ],
)
def test_no_node_check_when_rendering_or_switched_off(
    setting: dict[str, str], nodes: list[tuple[str | None, str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dict(CONFIG)
    if "env" in setting:
        monkeypatch.setenv(cluster.NODE_CHECK_ENV, setting["env"])
    else:
        config |= setting

    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert "scheduling" not in platform.services["too-big"]
        assert deployment_annotations(mocks, "Deployment", "too-big") == {}

    run(config, check)
    assert nodes == []


def test_an_unreachable_cluster_is_an_info_line_not_an_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unreachable(kubeconfig: str | None, context: str | None, timeout: float = 5.0) -> list[cluster.Node]:
        raise cluster.ClusterUnavailable("cannot reach context x (https://127.0.0.1:1): connection refused")

    monkeypatch.setenv(cluster.NODE_CHECK_ENV, "1")
    monkeypatch.setattr(cluster, "read_nodes", unreachable)

    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert "scheduling" not in platform.services["too-big"]
        assert deployment_annotations(mocks, "Deployment", "too-big") == {}

    with caplog.at_level("INFO"):
        run(CONFIG, check)
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert "nodes not checked: cannot reach context x (https://127.0.0.1:1): connection refused" in infos, infos


def test_delivery_operator_is_checked_with_the_same_pod(
    nodes: list[tuple[str | None, str | None]], caplog: pytest.LogCaptureFixture
) -> None:
    # The controller's pod asks the same resources, node selector and tolerations as the one we render.
    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert platform.services["qwen36-hybrid"]["scheduling"] == "fits: kwok-dual-rtx5060ti"
        assert platform.services["too-big"]["scheduling"].startswith("Pending: no node can run it: ")
        assert not [r for r in mocks.resources if r.kind == "Deployment" and r.object_name == "too-big"]

    with caplog.at_level("WARNING"):
        run({**CONFIG, "llmkube:delivery": "operator"}, check)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith("llmkube:services.too-big: its pod will stay Pending") for w in warnings), warnings
