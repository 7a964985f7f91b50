"""A multi-node group (multiNode size 2, llama.cpp RPC) on the local control plane (tests/e2e/cluster.py): the real
API server takes every object the stack renders, and the real scheduler puts llama-server and its worker onto the
right KWOK nodes.

The cluster has one node per profile; a group of two rtx4090 members needs two rtx4090 nodes, so the module adds a
second one, made by tools/cluster-nodes as tools/cluster makes the others, and deletes it at the end.

How the objects get there:

- The placements go through the real Pulumi engine (the CLI, our program, the Kubernetes provider), as
  test_pulumi_local.py does: `pulumi up` of a stack with ``multiNode: {size: 2}`` takes about 15 s here, and it
  returns only once the provider's await has seen both Deployments available, so every object (Namespace, cache
  claim, Deployments, the Service and the worker's headless Service, both NetworkPolicies) has been accepted by
  the API server and every pod admitted under the namespace's restricted Pod Security. Each case is up, checked,
  then destroyed; the kept namespace and cache claim go at the end of the module.
- The Pending case applies the rendered manifests with `kubectl apply --server-side` instead: a member that can
  never be scheduled keeps its Deployment unavailable, and Pulumi would await it for its timeout (10 minutes) and
  fail the update.

What each placement proves: both members land on rtx4090 nodes (the profile's nodeSelector and GPU toleration),
on two distinct nodes, and a member's ``nodeName`` pin is honoured whichever node it names; the worker asks its
node's GPU; the worker's headless Service resolves to the worker pod alone (its EndpointSlice), and the server's
Service selects llama-server's pod, never the worker. With one GPU per rtx4090 node the GPUs alone would already
keep the members apart, so the anti-affinity is proven by a CPU group, whose members would both fit the one
cpu-only node: the second stays Pending, and the scheduler says the anti-affinity is why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from llmkube_components.pipeline import StackBuild, platform
from llmkube_components.settings import Settings
from tests.e2e.cluster import (
    TOOLS,
    cluster_tools,
    delete_namespace,
    get,
    gone,
    kubectl,
    ready,
    unschedulable_reason,
    wait_until,
)
from tests.e2e.pulumi_project import ReconfiguredStack, copy_project, initialised_stack

pytestmark = pytest.mark.e2e

cluster_tools()

NAMESPACE = "llmkube-multi-node-e2e"
STACK = "multi-node"
SERVICE = "qwen27"  # Qwen3.5-27B Q8_0 at 32K: all layers on the GPUs of two rtx4090 nodes, one per member
QWEN27 = "https://h/Qwen3.5-27B-Q8_0.gguf"  # planned offline from the catalog; nothing downloads it under KWOK
PROFILE = "rtx4090"
FIRST = "kwok-rtx4090"  # the cluster's own node of the profile
SECOND = "kwok-rtx4090-b"  # the one this module adds
GPU = "nvidia.com/gpu"
GROUP = "inference.llmkube.dev/group"
RANK = "inference.llmkube.dev/rank"
HOSTNAME = "kubernetes.io/hostname"
PROFILE_LABEL = "llmkube.dev/hardware-profile"
FIELD_MANAGER = "llmkube-e2e-multi-node"
# The program plans from the catalog (tests/conftest.py sets it too). The preview's node check stays off: it judges
# llama-server's pod alone, and a pod of the previous case still terminating could make it skip the await.
ENV = {"LLMKUBE_OFFLINE": "1", "LLMKUBE_NODE_CHECK": "0"}
OFFLINE = Settings(offline=True)
# What the stack renders and the API server must hold (the Namespace and the cache claim are checked apart).
WORKLOAD_KINDS = ("Deployment", "Service", "NetworkPolicy")


def stack_config(members: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The stack's llmkube config (keys without the ``llmkube:`` prefix): one service, a group of two."""
    multi: dict[str, Any] = {"size": 2, **({"members": members} if members else {})}
    return {
        "delivery": "direct",
        "namespace": NAMESPACE,
        # The planner's pool check wants a node of the profile per member: the profile counts two.
        "hardware": {"extends": PROFILE, "nodes": 2},
        "models": {SERVICE: {"source": QWEN27}},
        "services": {SERVICE: {"modelRef": SERVICE, "contextSize": 32768, "multiNode": multi}},
    }


def rendered(build: StackBuild, service: str) -> list[dict[str, Any]]:
    """A service's workloads and NetworkPolicies as the pipeline renders them."""
    built = build.services[service]
    policies = [p for p in (built.network_policy, built.worker_network_policy) if p is not None]
    return [*built.workloads, *policies]


# --- the cluster's objects --------------------------------------------------------------------------------------


def group_pods(env: dict[str, str], group: str) -> dict[int, dict[str, Any]]:
    """The group's pods that are not going away, by rank (0: llama-server)."""
    items = get(env, "pods", "-n", NAMESPACE, "-l", f"{GROUP}={group}")["items"]
    live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
    by_rank = {int(p["metadata"]["labels"][RANK]): p for p in live}
    assert len(by_rank) == len(live), f"two pods of one rank: {[p['metadata']['name'] for p in live]}"
    return by_rank


def endpoints(env: dict[str, str], service: str) -> list[tuple[str, tuple[str, ...], bool]]:
    """What a Service resolves to: (pod, addresses, ready) of each endpoint of its EndpointSlices."""
    slices = get(env, "endpointslices", "-n", NAMESPACE, "-l", f"kubernetes.io/service-name={service}")["items"]
    return sorted(
        (e["targetRef"]["name"], tuple(e["addresses"]), bool(e.get("conditions", {}).get("ready")))
        for s in slices
        for e in s.get("endpoints") or []
    )


def selected(selector: dict[str, str], pods: dict[int, dict[str, Any]]) -> list[str]:
    """The names of the pods whose labels match a Service's selector."""
    return [
        p["metadata"]["name"]
        for p in pods.values()
        if all(p["metadata"]["labels"].get(k) == v for k, v in selector.items())
    ]


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def namespace(cluster: dict[str, str]) -> Iterator[str]:
    """The module's namespace, deleted at the end with all it holds, the cache claim's volume included: the cluster
    is shared, and test_pulumi_local.py compares what the cluster holds before and after its stack."""
    yield NAMESPACE
    delete_namespace(cluster, NAMESPACE)


@pytest.fixture(scope="module")
def second_node(cluster: dict[str, str]) -> Iterator[str]:
    """A second fake rtx4090 node, ``kwok-rtx4090-b``: what tools/cluster-nodes makes for the profile (labels with
    kubernetes.io/hostname, the GPU in capacity and allocatable, the GPU taint, the KWOK annotation), renamed, and
    applied as tools/cluster applies its nodes. Deleted at the end, however the module ends."""
    made = subprocess.run(
        [sys.executable, str(TOOLS / "cluster-nodes"), PROFILE], capture_output=True, text=True, check=True
    )
    node = json.loads(made.stdout)
    assert node["metadata"]["name"] == FIRST
    node["metadata"]["name"] = SECOND
    node["metadata"]["labels"][HOSTNAME] = SECOND
    try:
        kubectl(
            cluster,
            *("apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}", "-f", "-"),
            stdin=json.dumps(node),
        )
        # A node's capacity and allocatable live in its status, which an apply of an existing node ignores.
        kubectl(cluster, "patch", "node", SECOND, "--subresource=status", "--type=merge", "-p", json.dumps(node))

        def schedulable() -> bool:
            # Ready (KWOK's node-initialize stage), and the node lifecycle controller has lifted its not-ready taint.
            found = get(cluster, "node", SECOND)
            taints = {t["key"] for t in found["spec"].get("taints", [])}
            return ready(found) and not any(k.startswith("node.kubernetes.io/") for k in taints)

        wait_until("the second rtx4090 node to be Ready", schedulable, timeout=120)
        yield SECOND
    finally:
        kubectl(cluster, "delete", "node", SECOND, "--ignore-not-found", "--timeout=60s", check=False)
        wait_until("the second node to be gone", lambda: gone(cluster, "node", SECOND), timeout=120)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, cluster: dict[str, str], namespace: str, second_node: str
) -> Iterator[ReconfiguredStack]:
    """The stack, initialised; destroyed at the end of the module before the second node and the namespace go."""
    project = copy_project(tmp_path_factory.mktemp("multi-node"))
    pods = f"{GROUP}={SERVICE}"
    with initialised_stack(project, cluster, STACK, ENV, stack_config(None), namespace=NAMESPACE, pods=pods) as state:
        yield state


@pytest.fixture
def group(stack: ReconfiguredStack) -> Iterator[ReconfiguredStack]:
    """The stack, for one case: whatever a test deploys is destroyed after it, however it ends."""
    try:
        yield stack
    finally:
        stack.destroy()


@pytest.fixture
def applied(cluster: dict[str, str], namespace: str) -> Iterator[list[dict[str, Any]]]:
    """Manifests a test applies with kubectl, deleted after it however it ends (the namespace and the cache claim
    are the module's: the ``namespace`` fixture deletes them)."""
    manifests: list[dict[str, Any]] = []
    yield manifests
    owned = [m for m in manifests if m["kind"] not in ("Namespace", "PersistentVolumeClaim")]
    if owned:
        listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": owned})
        kubectl(cluster, "delete", "--ignore-not-found", "--timeout=120s", "-f", "-", stdin=listed, check=False)
    groups = {m["spec"]["template"]["metadata"]["labels"].get(GROUP) for m in owned if m["kind"] == "Deployment"}
    for name in sorted(g for g in groups if g):
        selector = f"{GROUP}={name}"
        wait_until(f"the pods of {name} to be gone", partial(gone, cluster, "pods", "-n", NAMESPACE, "-l", selector))


# --- the group on two rtx4090 nodes, through the Pulumi engine ------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        # No pins: the scheduler picks, onto the profile's two nodes, one member each.
        pytest.param(None, None, id="no-pins"),
        # The worker pinned to either node: it runs there, and llama-server on the other.
        pytest.param([{"rank": 1, "nodeName": FIRST}], {1: FIRST, 0: SECOND}, id="worker-pinned-to-the-first-node"),
        pytest.param([{"rank": 1, "nodeName": SECOND}], {1: SECOND, 0: FIRST}, id="worker-pinned-to-the-added-node"),
        # Rank 0 is llama-server: its pin goes onto the server's pod.
        pytest.param([{"rank": 0, "nodeName": SECOND}], {0: SECOND, 1: FIRST}, id="server-pinned-to-the-added-node"),
    ],
)
def test_the_scheduler_places_the_group_on_distinct_gpu_nodes_as_pinned(
    group: ReconfiguredStack,
    members: list[dict[str, Any]] | None,
    expected: dict[int, str] | None,
) -> None:
    env = group.cluster
    config = stack_config(members)
    group.up(config)

    # Every object the pipeline renders for the stack is in the cluster: the API server took them all.
    build = platform(config, OFFLINE)
    manifests = rendered(build, SERVICE)
    want = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    held = {
        (i["kind"], i["metadata"]["name"])
        for i in get(env, "deployments,services,networkpolicies", "-n", NAMESPACE)["items"]
    }
    assert {m["kind"] for m in manifests} == set(WORKLOAD_KINDS)
    assert held == want, (held, want)
    (claim,) = build.cache
    assert get(env, "pvc", claim["metadata"]["name"], "-n", NAMESPACE)["status"]["phase"] == "Bound"
    labels = get(env, "namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"  # and both pods were admitted under it
    worker_service = f"{SERVICE}-rpc-1"
    for name in (SERVICE, worker_service):
        assert get(env, "deployment", name, "-n", NAMESPACE)["status"].get("availableReplicas") == 1, name

    # Pulumi awaited both Deployments: both pods are scheduled and Ready.
    pods = group_pods(env, SERVICE)
    assert sorted(pods) == [0, 1], pods.keys()
    head, worker = pods[0], pods[1]
    assert all(ready(p) and p["status"]["phase"] == "Running" for p in pods.values())
    placed = {rank: p["spec"]["nodeName"] for rank, p in pods.items()}
    assert sorted(placed.values()) == sorted({FIRST, SECOND}), placed  # the profile's two nodes, one member each
    if expected is not None:
        assert placed == expected
    pinned = {m["rank"]: m["nodeName"] for m in members or []}
    for rank, pod in pods.items():
        selector = pod["spec"]["nodeSelector"]
        assert selector["nvidia.com/gpu.product"] == "NVIDIA-GeForce-RTX-4090"
        assert selector.get(HOSTNAME) == pinned.get(rank), selector

    # Each member holds its node's one GPU; the worker's request lands on a GPU node of its profile.
    for rank, pod in pods.items():
        (container,) = pod["spec"]["containers"]
        assert container["resources"]["requests"][GPU] == "1", (rank, container["resources"])
        assert container["resources"]["limits"][GPU] == "1", (rank, container["resources"])
    worker_node = get(env, "node", worker["spec"]["nodeName"])
    assert worker_node["status"]["allocatable"][GPU] == "1"
    assert worker_node["metadata"]["labels"][PROFILE_LABEL] == PROFILE
    assert worker["spec"]["containers"][0]["name"] == "ggml-rpc-server"
    assert head["spec"]["containers"][0]["name"] == "llama-server"
    args = head["spec"]["containers"][0]["args"]
    assert args[args.index("--rpc") + 1] == f"{worker_service}.{NAMESPACE}.svc:50052"

    # The worker's headless Service resolves to the worker's pod, and to nothing else.
    svc = get(env, "service", worker_service, "-n", NAMESPACE)
    assert svc["spec"]["clusterIP"] == "None"
    assert selected(svc["spec"]["selector"], pods) == [worker["metadata"]["name"]]
    worker_endpoint = [(worker["metadata"]["name"], (worker["status"]["podIP"],), True)]
    wait_until("the worker's endpoint", lambda: endpoints(env, worker_service) == worker_endpoint)

    # The server's Service selects llama-server's pod only: a worker behind it would get the HTTP requests.
    svc = get(env, "service", SERVICE, "-n", NAMESPACE)
    assert svc["spec"]["clusterIP"] not in ("", "None")
    assert selected(svc["spec"]["selector"], pods) == [head["metadata"]["name"]]
    head_endpoint = [(head["metadata"]["name"], (head["status"]["podIP"],), True)]
    wait_until("the server's endpoint", lambda: endpoints(env, SERVICE) == head_endpoint)

    # The NetworkPolicies as the API server holds them: the workers admit llama-server's pods only.
    policy = get(env, "networkpolicy", f"{SERVICE}-rpc-workers", "-n", NAMESPACE)["spec"]
    assert selected(policy["podSelector"]["matchLabels"], pods) == [worker["metadata"]["name"]]
    (ingress,) = policy["ingress"]
    (source,) = ingress["from"]
    assert selected(source["podSelector"]["matchLabels"], pods) == [head["metadata"]["name"]]
    assert (
        get(env, "networkpolicy", SERVICE, "-n", NAMESPACE)["spec"]["podSelector"]["matchLabels"]
        == svc["spec"]["selector"]
    )


# --- one node of the profile for a group of two: the anti-affinity keeps a member Pending ---------------------------


def test_with_one_node_of_the_profile_the_second_member_stays_pending_by_the_anti_affinity(
    cluster: dict[str, str], applied: list[dict[str, Any]]
) -> None:
    # A small model on two cpu-only nodes: both members (a few GiB of memory each, no GPU) would fit the cluster's
    # one cpu-only node together, and the GPU nodes' taint keeps them off the others, so the group's required
    # anti-affinity is the one thing between the second member and that node. (An rtx4090 group cannot show it:
    # the scheduler checks resources before pod affinity, and the first member holds the node's one GPU.)
    config = {
        "delivery": "direct",
        "namespace": NAMESPACE,
        "hardware": {"extends": "cpu-only", "nodes": 2},
        "models": {"tiny": {"source": "https://h/Llama-3.2-1B-Instruct-Q4_K_M.gguf"}},
        "services": {"tiny": {"modelRef": "tiny", "contextSize": 4096, "multiNode": {"size": 2}}},
    }
    build = platform(config, OFFLINE)
    foundation = [*build.namespace, *build.cache]
    workloads = rendered(build, "tiny")
    applied.extend([*foundation, *workloads])

    def apply(manifests: list[dict[str, Any]]) -> None:
        listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
        kubectl(
            cluster,
            *("apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}", "-f", "-"),
            stdin=listed,
        )

    apply(foundation)
    # The claim first: llama-server's pod is unschedulable for another reason while it is unbound.
    claim = build.cache[0]["metadata"]["name"]
    wait_until(
        "the cache claim to be Bound",
        lambda: get(cluster, "pvc", claim, "-n", NAMESPACE)["status"].get("phase") == "Bound",
    )
    apply(workloads)

    def verdict() -> tuple[dict[str, Any], dict[str, Any], str] | None:
        pods = group_pods(cluster, "tiny")
        if sorted(pods) != [0, 1]:
            return None
        bound = [p for p in pods.values() if p["spec"].get("nodeName")]
        waiting = [p for p in pods.values() if not p["spec"].get("nodeName")]
        if len(bound) != 1 or len(waiting) != 1:
            return None
        message = unschedulable_reason(waiting[0])
        return (bound[0], waiting[0], message) if message and "anti-affinity" in message else None

    found = wait_until("one member placed, the other refused", verdict, timeout=120)
    assert found is not None  # (wait_until returns a true value only; this tells the type checker)
    placed, pending, message = found
    # Which member the scheduler took first is its choice; the other is refused whichever it is.
    assert placed["spec"]["nodeName"] == "kwok-cpu-only"
    assert "didn't match pod anti-affinity rules" in message, message
    assert "Insufficient" not in message, message  # room was not the reason: only the anti-affinity
    assert pending["status"]["phase"] == "Pending"
    assert wait_until(
        "the placed member to be Ready", lambda: ready(get(cluster, "pod", placed["metadata"]["name"], "-n", NAMESPACE))
    )
    # Still refused once the first member is Ready: no passing state of the scheduler.
    again = get(cluster, "pod", pending["metadata"]["name"], "-n", NAMESPACE)
    assert not again["spec"].get("nodeName") and "anti-affinity" in (unschedulable_reason(again) or ""), again["status"]
