"""The preview's node check of a multi-node service: every member's pod (llama-server's, then each worker's) is
judged, each on a node no other member has (their required anti-affinity), and a stack's own running workers
make way for its update as its llama-server pods do."""

from __future__ import annotations

from typing import Any

from llmkube_components import cluster, pipeline
from llmkube_components.placement import ClusterView, Notes, scheduling
from llmkube_components.settings import Settings

QWEN27 = "https://h/Qwen3.5-27B-Q8_0.gguf"
GiB = 2**30


def node(name: str, gpus: int = 1) -> cluster.Node:
    return cluster.Node(
        name=name,
        labels={"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-4090", "kubernetes.io/hostname": name},
        taints=({"key": "nvidia.com/gpu", "effect": "NoSchedule"},),
        allocatable={"cpu": "16", "memory": "60Gi", "nvidia.com/gpu": str(gpus), "pods": "110"},
    )


def built(**multi: Any) -> pipeline.ServiceBuild:
    raw = {
        "hardware": {"extends": "rtx4090", "nodes": 2},
        "models": {"m": {"source": QWEN27}},
        "services": {"s": {"modelRef": "m", "contextSize": 32768, "multiNode": {"size": 2, **multi}}},
    }
    return pipeline.platform(raw, Settings(offline=True)).services["s"]


def judge(nodes: list[cluster.Node], pods: list[cluster.Pod] | None = None, **multi: Any) -> tuple[Any, Notes]:
    service = built(**multi)

    def owner_of(pod: cluster.Pod) -> str | None:
        return pod.labels.get("app") if pod.labels.get("app") in ("s", "s-rpc-1") else None

    room = cluster.Room(nodes, pods or [], owner_of) if pods is not None else None
    notes = Notes()
    return scheduling(service.service, service.workloads, ClusterView(nodes, room), notes), notes


def test_each_member_gets_a_node_of_its_own() -> None:
    for pods in (None, []):  # room unknown (pods not readable), and room known
        placed, notes = judge([node("a"), node("b")], pods)
        assert placed.text == "fits: a (rank 0), b (rank 1)" and not placed.pending
        assert notes.warnings == []


def test_a_group_larger_than_the_nodes_leaves_its_worker_pending_with_the_reason() -> None:
    # One node with two GPUs would hold both pods' GPUs, but not two members of one group.
    placed, notes = judge([node("a", gpus=2)], [])
    assert placed.pending
    assert placed.text == (
        "Pending: its rank 1 worker s-rpc-1: no node has room left for it: a: runs another member of its group"
    )
    (warning,) = notes.warnings
    assert warning.startswith("llmkube:services.s: its pod will stay Pending, its rank 1 worker s-rpc-1: ")
    unread, _ = judge([node("a", gpus=2)])  # the pods could not be read: the nodes alone
    assert unread.text == (
        "Pending: its rank 1 worker s-rpc-1: no node is left for it: a: runs another member of its group"
    )


def test_a_pinned_member_is_judged_on_its_node() -> None:
    placed, _ = judge([node("a"), node("b")], [], members=[{"rank": 0, "nodeName": "b"}])
    assert placed.text == "fits: b (rank 0), a (rank 1)"


def test_the_stacks_running_worker_makes_way_for_its_update() -> None:
    running = [
        cluster.Pod("llmkube", "s-abc", "a", {"app": "s"}, {"nvidia.com/gpu": 1, "memory": 11 * GiB}),
        cluster.Pod("llmkube", "s-rpc-1-abc", "b", {"app": "s-rpc-1"}, {"nvidia.com/gpu": 1, "memory": GiB}),
    ]
    placed, notes = judge([node("a"), node("b")], running)
    assert placed.text == "fits: a (rank 0), b (rank 1)" and notes.warnings == []
    # Somebody else's pod on b leaves the worker no GPU.
    other = [running[0], cluster.Pod("other", "x", "b", {"app": "x"}, {"nvidia.com/gpu": 1})]
    placed, _ = judge([node("a"), node("b")], other)
    assert placed.pending and "its rank 1 worker s-rpc-1: no node has room left for it: a: runs another member" in (
        placed.text
    )
