"""The preview-time node check of Platform: a service no node of the target cluster can run is said so, with
the reason per node, and is deployed without Pulumi waiting out its timeout; the others are awaited as usual.

The cluster is faked here (cluster.ClusterReader); tests/e2e/test_pulumi_local.py runs the same against a real
API server and scheduler.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pytest

from llmkube_components import cluster
from llmkube_components.settings import NODE_CHECK_ENV
from tests.pulumi_program import RecordingMocks, stack_config
from tests.test_components import run

DUAL = cluster.Node(
    name="kwok-dual-rtx5060ti",
    labels={"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-5060-Ti"},
    taints=({"key": "nvidia.com/gpu", "effect": "NoSchedule"},),
    allocatable={"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "2", "pods": "110"},
)
CPU = cluster.Node(name="kwok-cpu-only", allocatable={"cpu": "8", "memory": "32Gi", "pods": "110"})

# The local stack, on a profile claiming two nodes of four GPUs (the cluster has one node with two) and a service
# using four.
CONFIG = {
    **stack_config("local"),
    "llmkube:hardware": {"extends": "dual-rtx5060ti", "gpu": {"count": 4}, "nodes": 2},
    "llmkube:services": {
        **stack_config("local")["llmkube:services"],
        "too-big": {"modelRef": "qwen36-35b-a3b", "contextSize": 8192, "resources": {"gpu": 4, "cpu": "8"}},
    },
}

# Services that share the room of the cluster's one dual node: the profile claims two such nodes, so that the
# preview's pool check (planner/pool.py) passes and the node check finds what the cluster really has.
TWO_DUALS = {"extends": "dual-rtx5060ti", "nodes": 2}


@dataclass
class FakeCluster:
    pods: list[cluster.Pod] = field(default_factory=list)  # bound pods: a test may add some
    # (kubeconfig, context, cluster) each reader was made for
    asked: list[tuple[str | None, str | None, str | None]] = field(default_factory=list)
    environs: list[Mapping[str, str]] = field(default_factory=list)  # the environment each reader was given
    fail_nodes: Exception | None = None  # what listing the nodes raises instead, if set
    fail_pods: Exception | None = None  # what listing the pods raises instead, if set
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)  # existing namespaces and their labels


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    """Nodes CPU and DUAL instead of the cluster's, and the pods the test puts there."""
    state = FakeCluster()

    class Reader:
        def __init__(
            self,
            kubeconfig: str | None,
            context: str | None,
            timeout: float = 5.0,
            *,
            cluster_name: str | None = None,
            environ: Mapping[str, str] | None = None,
        ) -> None:
            state.asked.append((kubeconfig, context, cluster_name))
            state.environs.append(environ or {})

        def nodes(self) -> list[cluster.Node]:
            if state.fail_nodes:
                raise state.fail_nodes
            return [CPU, DUAL]

        def pods(self) -> list[cluster.Pod]:
            if state.fail_pods:
                raise state.fail_pods
            return list(state.pods)

        def namespace_labels(self, name: str) -> dict[str, str] | None:
            return state.namespaces.get(name)

    monkeypatch.setenv(NODE_CHECK_ENV, "1")
    monkeypatch.setattr(cluster, "ClusterReader", Reader)
    return state


def deployment_annotations(mocks: RecordingMocks, kind: str, name: str) -> dict[str, str]:
    (obj,) = [r for r in mocks.resources if r.kind == kind and r.object_name == name]
    return obj.inputs["metadata"].get("annotations") or {}


def test_a_service_no_node_can_run_is_said_at_preview_and_not_awaited(
    fake: FakeCluster, caplog: pytest.LogCaptureFixture
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
    assert fake.asked == [(".state/cluster/kubeconfig", None, None)]


@pytest.mark.parametrize(
    "setting",
    [
        {"kubernetes:renderYamlToDirectory": "rendered/x"},  # nothing to ask: manifests go to a folder
        {"env": "0"},  # LLMKUBE_NODE_CHECK=0
    ],
)
def test_no_node_check_when_rendering_or_switched_off(
    setting: dict[str, str], fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dict(CONFIG)
    if "env" in setting:
        monkeypatch.setenv(NODE_CHECK_ENV, setting["env"])
    else:
        config |= setting

    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert "scheduling" not in platform.services["too-big"]
        assert deployment_annotations(mocks, "Deployment", "too-big") == {}

    run(config, check)
    assert fake.asked == []


def test_an_unreachable_cluster_is_an_info_line_not_an_error(
    fake: FakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_nodes = cluster.ClusterUnavailable("cannot reach context x (https://127.0.0.1:1): connection refused")

    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert "scheduling" not in platform.services["too-big"]
        assert deployment_annotations(mocks, "Deployment", "too-big") == {}

    with caplog.at_level("INFO"):
        run(CONFIG, check)
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert "nodes not checked: cannot reach context x (https://127.0.0.1:1): connection refused" in infos, infos


def test_delivery_operator_is_checked_with_the_same_pod(fake: FakeCluster, caplog: pytest.LogCaptureFixture) -> None:
    # The controller's pod asks the same resources, node selector and tolerations as the one we render.
    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert platform.services["qwen36-hybrid"]["scheduling"] == "fits: kwok-dual-rtx5060ti"
        assert platform.services["too-big"]["scheduling"].startswith("Pending: no node can run it: ")
        assert not [r for r in mocks.resources if r.kind == "Deployment" and r.object_name == "too-big"]

    with caplog.at_level("WARNING"):
        run({**CONFIG, "llmkube:delivery": "operator"}, check)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith("llmkube:services.too-big: its pod will stay Pending") for w in warnings), warnings


def gpu_pod(namespace: str, name: str, gpus: int, labels: dict[str, str] | None = None) -> cluster.Pod:
    return cluster.Pod(namespace, name, DUAL.name, labels or {}, {"cpu": 1000, "memory": 2**30, "nvidia.com/gpu": gpus})


def test_pods_already_on_the_node_leave_no_room_and_the_stack_says_whose(
    fake: FakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    fake.pods.append(gpu_pod("ml", "trainer-0", 2))
    config = {**CONFIG, "llmkube:hardware": "dual-rtx5060ti"}
    config["llmkube:services"] = {"qwen36-hybrid": CONFIG["llmkube:services"]["qwen36-hybrid"]}

    def check(platform: Any, mocks: RecordingMocks) -> None:
        scheduling = platform.services["qwen36-hybrid"]["scheduling"]
        assert scheduling.startswith("Pending: no node has room left for it: "), scheduling
        assert "kwok-dual-rtx5060ti: nvidia.com/gpu 2 asked, 0 free (in use by ml/trainer-0)" in scheduling
        assert deployment_annotations(mocks, "Deployment", "qwen36-hybrid") == {"pulumi.com/skipAwait": "true"}

    with caplog.at_level("WARNING"):
        run(config, check)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(
        w.startswith("llmkube:services.qwen36-hybrid: its pod will stay Pending, no node has room") for w in warnings
    )


def test_services_of_one_stack_share_the_room_in_config_order(fake: FakeCluster) -> None:
    config = {**CONFIG, "llmkube:hardware": TWO_DUALS}
    second = {**CONFIG["llmkube:services"]["qwen36-hybrid"], "resources": {"gpu": 2, "cpu": "4", "hostMemory": "12Gi"}}
    config["llmkube:services"] = {"qwen36-hybrid": CONFIG["llmkube:services"]["qwen36-hybrid"], "second": second}

    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert platform.services["qwen36-hybrid"]["scheduling"] == "fits: kwok-dual-rtx5060ti"
        pending = platform.services["second"]["scheduling"]
        assert "kwok-dual-rtx5060ti: nvidia.com/gpu 2 asked, 0 free (in use by llmkube/qwen36-hybrid (this stack))" in (
            pending
        ), pending
        assert deployment_annotations(mocks, "Deployment", "second") == {"pulumi.com/skipAwait": "true"}
        assert deployment_annotations(mocks, "Deployment", "qwen36-hybrid") == {}

    run(config, check)


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [
        # The pod the last `pulumi up` started holds both GPUs; the update (Recreate) replaces it.
        ("llmkube", "fits: kwok-dual-rtx5060ti"),
        # The same labels in another namespace are somebody else's.
        ("other", "nvidia.com/gpu 2 asked, 0 free (in use by other/qwen36-hybrid-5d8f-x2x)"),
    ],
)
def test_the_stacks_own_running_pods_make_way_for_their_update(
    fake: FakeCluster, namespace: str, expected: str
) -> None:
    labels = {"app": "qwen36-hybrid", "inference.llmkube.dev/service": "qwen36-hybrid"}
    fake.pods.append(gpu_pod(namespace, "qwen36-hybrid-5d8f-x2x", 2, labels))
    config = {**CONFIG, "llmkube:hardware": "dual-rtx5060ti"}
    config["llmkube:services"] = {"qwen36-hybrid": CONFIG["llmkube:services"]["qwen36-hybrid"]}

    def check(platform: Any, mocks: RecordingMocks) -> None:
        scheduling = platform.services["qwen36-hybrid"]["scheduling"]
        assert expected in scheduling, scheduling

    run(config, check)


def test_pods_that_cannot_be_listed_leave_the_allocatable_check(
    fake: FakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_pods = cluster.ClusterUnavailable("cannot list the pods of context x: HTTP 403 Forbidden")

    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert platform.services["qwen36-hybrid"]["scheduling"] == "fits: kwok-dual-rtx5060ti"
        assert platform.services["too-big"]["scheduling"].startswith("Pending: no node can run it: ")

    with caplog.at_level("INFO"):
        run(CONFIG, check)
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert "room on the nodes not checked: cannot list the pods of context x: HTTP 403 Forbidden" in infos, infos


def test_a_running_service_keeps_its_room_from_a_new_one_placed_before_it(fake: FakeCluster) -> None:
    # "zeta" runs and holds both GPUs; "alpha", added now, comes first in config order but must not get them.
    fake.pods.append(gpu_pod("llmkube", "zeta-5d8f-x2x", 2, {"app": "zeta", "inference.llmkube.dev/service": "zeta"}))
    service = CONFIG["llmkube:services"]["qwen36-hybrid"]
    config = {**CONFIG, "llmkube:hardware": TWO_DUALS, "llmkube:services": {"alpha": service, "zeta": service}}

    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert platform.services["zeta"]["scheduling"] == "fits: kwok-dual-rtx5060ti"
        alpha = platform.services["alpha"]["scheduling"]
        assert "nvidia.com/gpu 2 asked, 0 free (in use by llmkube/zeta-5d8f-x2x)" in alpha, alpha
        assert deployment_annotations(mocks, "Deployment", "alpha") == {"pulumi.com/skipAwait": "true"}
        assert deployment_annotations(mocks, "Deployment", "zeta") == {}

    run(config, check)


def test_replicas_and_autoscaling_count_every_pod(fake: FakeCluster) -> None:
    one_gpu = {
        "modelRef": "qwen36-35b-a3b",
        "contextSize": 8192,
        "offload": "auto",
        "resources": {"gpu": 1, "cpu": "4"},
    }
    config = {
        **CONFIG,
        "llmkube:hardware": TWO_DUALS,
        "llmkube:services": {
            "none": {**one_gpu, "replicas": 0},
            "scaled": {**one_gpu, "autoscaling": {"minReplicas": 2, "maxReplicas": 4}},
            "late": one_gpu,
        },
    }

    def check(platform: Any, mocks: RecordingMocks) -> None:
        services = platform.services
        assert services["none"]["scheduling"] == "no pods (replicas: 0)"
        assert services["scaled"]["scheduling"] == "fits: kwok-dual-rtx5060ti"  # both GPUs, one per replica
        late = services["late"]["scheduling"]
        assert "nvidia.com/gpu 1 asked, 0 free" in late, late

    run(config, check)


def test_no_node_check_with_the_callers_own_provider(fake: FakeCluster) -> None:
    # Its kubeconfig is not ours to read: the check stays out of the way.
    from llmkube_components import Platform

    def user_program() -> Any:
        provider = pulumi.ProviderResource("kubernetes", "theirs", {})
        return Platform("llmkube", dict(stack_args()), pulumi.ResourceOptions(provider=provider))

    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert all("scheduling" not in s for s in platform.services.values())

    run({}, check, user_program)
    assert fake.asked == []


def test_the_providers_cluster_setting_is_read_with_its_kubeconfig(fake: FakeCluster) -> None:
    run({**CONFIG, "kubernetes:context": "home", "kubernetes:cluster": "lab"}, lambda platform, mocks: None)
    assert fake.asked == [(".state/cluster/kubeconfig", "home", "lab")]


def test_a_failing_check_is_an_info_line(fake: FakeCluster, caplog: pytest.LogCaptureFixture) -> None:
    fake.fail_nodes = AttributeError("'list' object has no attribute 'get'")

    def check(platform: Any, mocks: RecordingMocks) -> None:
        assert "scheduling" not in platform.services["too-big"]

    with caplog.at_level("INFO"):
        run(CONFIG, check)
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert "nodes not checked: AttributeError: 'list' object has no attribute 'get'" in infos, infos


def stack_args() -> dict[str, Any]:
    """The local stack's llmkube: keys, as Platform arguments."""
    return {key.removeprefix("llmkube:"): value for key, value in CONFIG.items() if key.startswith("llmkube:")}


def test_settings_made_by_hand_still_give_the_kubeconfig_its_environment(
    fake: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # KUBECONFIG and the exec plugins' PATH come from the process, not from a Settings built in code.
    from llmkube_components import Platform
    from llmkube_components.settings import Settings

    monkeypatch.setenv("KUBECONFIG", "/somewhere/config")

    def user_program() -> Any:
        return Platform("llmkube", dict(stack_args()), settings=Settings(offline=True))

    run(CONFIG, lambda platform, mocks: None, user_program)
    (environ,) = fake.environs
    assert environ.get("KUBECONFIG") == "/somewhere/config" and "PATH" in environ


# --- namespace ownership (issue 11): never relabel a namespace this stack did not create ---------------------


def test_an_existing_namespace_llmkube_did_not_create_is_refused_before_anything_is_applied(fake: FakeCluster) -> None:
    from llmkube_components.errors import ConfigError

    fake.namespaces["llmkube"] = {"kubernetes.io/metadata.name": "llmkube", "team": "platform"}
    with pytest.raises(ConfigError) as info:
        run(CONFIG, lambda platform, mocks: None)
    text = str(info.value)
    assert text.startswith("llmkube:namespace: 'llmkube' exists and was not created by llmkube"), text
    assert "set createNamespace false to deploy into it as it is" in text


def test_our_own_retained_namespace_is_adopted_and_an_absent_one_created(fake: FakeCluster) -> None:
    def check(platform: Any, mocks: RecordingMocks) -> None:
        (namespace,) = [r for r in mocks.resources if r.kind == "Namespace"]
        assert namespace.inputs["metadata"]["annotations"] == {"pulumi.com/patchForce": "true"}

    fake.namespaces["llmkube"] = {"app.kubernetes.io/part-of": "llmkube", "app.kubernetes.io/name": "llmkube"}
    run(CONFIG, check)
    fake.namespaces.clear()
    run(CONFIG, check)


def test_a_namespace_used_as_it_is_is_not_checked(fake: FakeCluster) -> None:
    fake.namespaces["llmkube"] = {"team": "platform"}
    run({**CONFIG, "llmkube:createNamespace": "false"}, lambda platform, mocks: None)


def test_the_operator_namespace_is_checked_too(fake: FakeCluster) -> None:
    from llmkube_components.errors import ConfigError

    fake.namespaces["llmkube-system"] = {"team": "platform"}
    with pytest.raises(ConfigError) as info:
        run({**CONFIG, "llmkube:delivery": "operator"}, lambda platform, mocks: None)
    assert "llmkube:operator.namespace: 'llmkube-system' exists and was not created by llmkube" in str(info.value)
