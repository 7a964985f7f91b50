"""Fitting a pool: the replicas of every service on a profile placed together onto the profile's nodes, with an
error naming the numbers when they do not fit, and a warning when only an autoscaler's most does not."""

from __future__ import annotations

from typing import Any

import pytest

from llmkube_components.errors import ConfigError
from llmkube_components.hardware import resolve_profile
from llmkube_components.planner.pool import Replica, Share, nodes_needed, packs
from tests.stacks import load_stack

QWEN36 = "https://huggingface.co/ggml-org/Qwen3.6-35B-A3B-GGUF/resolve/main/Qwen3.6-35B-A3B-Q4_K_M.gguf"
LLAMA = "https://huggingface.co/bartowski/Llama-3.2-1B-Instruct-GGUF/resolve/main/Llama-3.2-1B-Instruct-Q4_K_M.gguf"
GiB = 2**30

# A small server: Llama 3.2 1B at 4K context with a 1 GiB prompt cache (about 1.1 GiB on a GPU, 2 GiB of RAM).
SMALL = {"modelRef": "llama", "contextSize": 4096, "extraArgs": ["--cache-ram", "1024"]}
# Qwen3.6-35B-A3B on both GPUs of the home lab, with an explicit host memory request (offload manual).
BIG = {"modelRef": "qwen", "contextSize": 8192, "resources": {"gpu": 2, "hostMemory": "24Gi"}}


def stack(hardware: Any, services: dict[str, dict[str, Any]]) -> Any:
    return load_stack(
        {"hardware": hardware, "models": {"qwen": {"source": QWEN36}, "llama": {"source": LLAMA}}, "services": services}
    )


def error(hardware: Any, services: dict[str, dict[str, Any]]) -> str:
    with pytest.raises(ConfigError) as info:
        stack(hardware, services)
    return str(info.value)


def pool_warnings(loaded: Any) -> list[str]:
    return [str(w) for w in loaded.warnings if "nodes" in w.message]


def small(gpus: int, memory: str = "4Gi", **more: Any) -> dict[str, Any]:
    return {**SMALL, "resources": {"gpu": gpus, "hostMemory": memory}, **more}


# ---------------------------------------------------------------------------------------------------------
# Services side by side
# ---------------------------------------------------------------------------------------------------------


def test_two_services_that_fit_alone_do_not_fit_one_node_together() -> None:
    # Each fits the 2-GPU node alone; together they need 3 GPUs.
    stack("dual-rtx5060ti", {"a": BIG})
    stack("dual-rtx5060ti", {"b": small(1)})
    assert error("dual-rtx5060ti", {"a": BIG, "b": small(1)}) == (
        "llmkube:hardware: dual-rtx5060ti (1 node of 2 x 15.4 GiB GPU and 60.0 GiB RAM usable) cannot hold its "
        "services' replicas together: a 1 replica x (2 GPUs, 24.0 GiB RAM), b 1 replica x (1 GPU, 4.0 GiB RAM); "
        "they need 2 nodes of dual-rtx5060ti, the stack has 1 node: set llmkube:hardware: "
        "{extends: dual-rtx5060ti, nodes: 2} if the cluster has them, or run fewer replicas or GPUs per replica"
    )


def test_the_message_is_the_same_whatever_the_order_of_the_services() -> None:
    services = {"a": BIG, "b": small(1), "c": small(0, "8Gi")}
    assert error("dual-rtx5060ti", services) == error("dual-rtx5060ti", dict(reversed(services.items())))


def test_replicas_of_one_service_are_summed() -> None:
    assert error("rtx4090", {"s": small(1, replicas=2)}) == (
        "llmkube:hardware: rtx4090 (1 node of 1 x 23.5 GiB GPU and 60.0 GiB RAM usable) cannot hold its services' "
        "replicas together: s 2 replicas x (1 GPU, 4.0 GiB RAM); they need 2 nodes of rtx4090, the stack has "
        "1 node: set llmkube:hardware: {extends: rtx4090, nodes: 2} if the cluster has them, or run fewer "
        "replicas or GPUs per replica"
    )


def test_nodes_make_room_and_keep_the_profiles_name() -> None:
    loaded = stack({"extends": "rtx4090", "nodes": 2}, {"s": small(1, replicas=2)})
    assert (loaded.profile.name, loaded.profile.nodes) == ("rtx4090", 2)
    # Three do not fit two nodes: the error points at the nodes already set.
    message = error({"extends": "rtx4090", "nodes": 2}, {"s": small(1, replicas=3)})
    assert "rtx4090 (2 nodes of 1 x 23.5 GiB GPU" in message
    assert message.endswith(
        "they need 3 nodes of rtx4090, the stack has 2 nodes: set llmkube:hardware.nodes: 3 if the cluster has "
        "them, or run fewer replicas or GPUs per replica"
    )


def test_a_cpu_only_pool_sums_the_ram() -> None:
    two = {key: small(0, "10Gi") for key in ("a", "b")}
    stack("cpu-only", two)  # 20 of 28 GiB
    assert error("cpu-only", {**two, "c": small(0, "10Gi")}) == (
        "llmkube:hardware: cpu-only (1 node of 28.0 GiB RAM usable) cannot hold its services' replicas together: "
        "a 1 replica x (10.0 GiB RAM), b 1 replica x (10.0 GiB RAM), c 1 replica x (10.0 GiB RAM); they need "
        "2 nodes of cpu-only, the stack has 1 node: set llmkube:hardware: {extends: cpu-only, nodes: 2} if the "
        "cluster has them, or run fewer replicas or GPUs per replica"
    )


def test_ram_is_summed_on_gpu_nodes_too() -> None:
    # Two GPUs for two services, but 2 x 32 GiB of RAM on a node with 60 usable.
    message = error("dual-rtx5060ti", {"a": small(1, "32Gi"), "b": small(1, "32Gi")})
    assert "a 1 replica x (1 GPU, 32.0 GiB RAM), b 1 replica x (1 GPU, 32.0 GiB RAM); they need 2 nodes" in message


def test_a_suspended_service_takes_no_room() -> None:
    stack("dual-rtx5060ti", {"a": BIG, "b": {**BIG, "suspend": True}, "c": {**BIG, "replicas": 0}})


def test_a_service_that_does_not_fit_alone_is_reported_alone() -> None:
    # Its own error says what is wrong; the pool's sums would only repeat it with a plan that will not run.
    message = error("dual-rtx5060ti", {"a": BIG, "b": {**BIG, "resources": {"gpu": 2, "hostMemory": "1Mi"}}})
    assert message.startswith("llmkube:services.b.resources.hostMemory: 1Mi is below the ")
    assert "llmkube:hardware" not in message


# ---------------------------------------------------------------------------------------------------------
# One pool per profile name
# ---------------------------------------------------------------------------------------------------------


def test_a_service_naming_the_stacks_profile_shares_its_nodes() -> None:
    named = {**BIG, "hardwareProfile": "dual-rtx5060ti"}
    stack({"extends": "dual-rtx5060ti", "nodes": 2}, {"a": BIG, "b": named})
    assert error("dual-rtx5060ti", {"a": BIG, "b": named}).startswith(
        "llmkube:hardware: dual-rtx5060ti (1 node of 2 x 15.4 GiB GPU"
    )
    # Services on another profile are another pool.
    stack("dual-rtx5060ti", {"a": BIG, "b": {**small(1), "hardwareProfile": "rtx4090"}})


def test_nodes_given_on_a_services_profile_count_for_the_pool() -> None:
    on_two = {**BIG, "hardwareProfile": {"extends": "dual-rtx5060ti", "nodes": 2}}
    stack("dual-rtx5060ti", {"a": BIG, "b": on_two})
    message = error("dual-rtx5060ti", {"a": BIG, "b": on_two, "c": BIG})
    assert message.startswith("llmkube:services.b.hardwareProfile: dual-rtx5060ti (2 nodes of ")
    assert "set llmkube:services.b.hardwareProfile.nodes: 3 if the cluster has them" in message


def test_two_node_counts_for_one_profile_are_an_error() -> None:
    other = {**BIG, "hardwareProfile": {"extends": "dual-rtx5060ti", "nodes": 3}}
    assert error({"extends": "dual-rtx5060ti", "nodes": 2}, {"a": BIG, "b": other}) == (
        "llmkube:services.b.hardwareProfile.nodes: 3, but llmkube:hardware gives the profile dual-rtx5060ti "
        "2 nodes; the nodes of a profile are counted once for all its services: set the number in one place"
    )


def test_one_name_for_two_kinds_of_node_is_an_error() -> None:
    bigger = {**small(1), "hardwareProfile": {"extends": "rtx4090", "hostMemory": "128Gi"}}
    message = error({"extends": "rtx4090", "hostMemory": "96Gi"}, {"a": small(1), "b": bigger})
    assert message == (
        "llmkube:services.b.hardwareProfile: names the profile rtx4090+custom as llmkube:hardware does, but with "
        "other nodes (1 x 23.5 GiB GPU and 124.0 GiB RAM usable, not 1 x 23.5 GiB GPU and 92.0 GiB RAM usable); "
        "services on profiles of one name share their nodes: give this profile a name of its own (name: ...)"
    )


@pytest.mark.parametrize(
    ("selection", "name", "nodes"),
    [
        ({"extends": "dual-rtx5060ti", "nodes": 3}, "dual-rtx5060ti", 3),
        ({"extends": "dual-rtx5060ti", "nodes": 3, "hostMemory": "128Gi"}, "dual-rtx5060ti+custom", 3),
        ("dual-rtx5060ti", "dual-rtx5060ti", 1),
    ],
)
def test_nodes_alone_keep_the_built_ins_name(selection: Any, name: str, nodes: int) -> None:
    profile = resolve_profile(selection, "hardware")
    assert (profile.name, profile.nodes) == (name, nodes)
    if name == "dual-rtx5060ti":
        assert profile.description == resolve_profile("dual-rtx5060ti", "hardware").description


def test_nodes_below_one_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_profile({"extends": "dual-rtx5060ti", "nodes": 0}, "hardware")
    assert str(info.value) == "llmkube:hardware.nodes: 0: input should be greater than or equal to 1"


# ---------------------------------------------------------------------------------------------------------
# GPU shares
# ---------------------------------------------------------------------------------------------------------


def shared(limit_gib: int, **more: Any) -> dict[str, Any]:
    sharing = {"mode": "shared", "memoryLimitGiB": limit_gib}
    return {**SMALL, "contextSize": 65536, "resources": {"gpu": 1, "gpuSharing": sharing}, **more}


def test_time_sliced_shares_pack_onto_one_gpu_by_their_planned_memory() -> None:
    # Each takes its planned GPU bytes and its own CUDA context (the profile's GPU reserve) of the 24 GiB GPU.
    alone = stack("rtx4090", {"s": shared(6)})
    planned = alone.plans["s"].chosen.memory.gpus[0].total
    fit = 24564 * 2**20 // (planned + 512 * 2**20)
    assert 2 <= fit < 10  # replicas go up to 10
    stack("rtx4090", {"s": shared(6, replicas=fit)})
    message = error("rtx4090", {"s": shared(6, replicas=fit + 1)})
    assert f"s {fit + 1} replicas x (" in message and " of a shared GPU, " in message
    assert "they need 2 nodes of rtx4090" in message


def test_shares_do_not_go_on_a_gpu_a_server_holds_whole() -> None:
    assert "they need 2 nodes of rtx4090" in error("rtx4090", {"a": small(1), "b": shared(6)})
    stack("dual-rtx5060ti", {"a": small(1), "b": shared(6), "c": shared(6)})  # whole GPU 0, shares on GPU 1


def test_mig_slices_pack_by_memory_and_compute_slices() -> None:
    def mig(replicas: int, profile: str = "1g.10gb") -> dict[str, Any]:
        sharing = {"mode": "partitioned", "profile": profile}
        return {**SMALL, "replicas": replicas, "resources": {"gpu": 1, "gpuSharing": sharing}}

    one_gpu = {"extends": "h100-80gb", "gpu": {"count": 1}}
    stack(one_gpu, {"m": mig(7)})  # seven slices of an H100
    message = error(one_gpu, {"m": mig(8)})
    assert "m 8 replicas x (1 MIG slice (9.3 GiB, 1/7 compute), 2.0 GiB RAM)" in message
    stack(one_gpu, {"a": mig(1, "3g.40gb"), "b": mig(1, "4g.40gb")})  # 7 compute slices, 80 GB
    assert "they need 2 nodes" in error(one_gpu, {"a": mig(2, "3g.40gb"), "b": mig(1, "1g.10gb")})


# ---------------------------------------------------------------------------------------------------------
# Autoscaling
# ---------------------------------------------------------------------------------------------------------


def test_max_replicas_beyond_the_pool_is_a_warning() -> None:
    loaded = stack("dual-rtx5060ti", {"s": small(1, autoscaling={"maxReplicas": 4})})
    assert pool_warnings(loaded) == [
        "llmkube:services.s.autoscaling.maxReplicas: 4, but at most 2 replicas of s (1 GPU, 4.0 GiB RAM each) fit "
        "on dual-rtx5060ti (1 node of 2 x 15.4 GiB GPU and 60.0 GiB RAM usable); the autoscaler's further "
        "replicas would stay Pending: lower maxReplicas to 2, or give the pool 2 nodes (llmkube:hardware: "
        "{extends: dual-rtx5060ti, nodes: 2}) if the cluster has them"
    ]
    assert (
        pool_warnings(stack({"extends": "dual-rtx5060ti", "nodes": 2}, {"s": small(1, autoscaling={"maxReplicas": 4})}))
        == []
    )


def test_min_replicas_beyond_the_pool_is_an_error() -> None:
    message = error("dual-rtx5060ti", {"s": small(1, autoscaling={"minReplicas": 3, "maxReplicas": 4})})
    assert "s 3 replicas (autoscaling.minReplicas) x (1 GPU, 4.0 GiB RAM); they need 2 nodes" in message


def test_autoscalers_that_reach_their_most_alone_but_not_together_are_warned_about() -> None:
    # Four GPUs: one held by c, each autoscaler at its most beside the other's one replica, but not both at two.
    scaled = small(1, autoscaling={"maxReplicas": 2})
    loaded = stack({"extends": "dual-rtx5060ti", "nodes": 2}, {"a": scaled, "b": scaled, "c": small(1)})
    assert pool_warnings(loaded) == [
        "llmkube:hardware: the autoscaled services a (maxReplicas 2), b (maxReplicas 2) each fit at their most "
        "on dual-rtx5060ti (2 nodes of 2 x 15.4 GiB GPU and 60.0 GiB RAM usable), but not all at once: whichever "
        "scales up first leaves the others' further replicas Pending; lower maxReplicas, or give the pool 3 nodes "
        "(llmkube:hardware.nodes: 3) if the cluster has them"
    ]


# ---------------------------------------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------------------------------------


def test_placement_is_first_fit_decreasing() -> None:
    node = resolve_profile("dual-rtx5060ti", "hardware")
    one, two = Replica("a", 1, (), None, 8 * GiB), Replica("b", 2, (), None, 8 * GiB)
    # In the given order first fit would split the 2-GPU replica's node; largest first, two nodes hold them.
    assert packs([one, two, one], 2, node)
    assert not packs([one, two, one, one], 2, node)
    assert nodes_needed([one, two, one, one], node) == 3


def test_shares_of_one_kind_only_share_a_gpu() -> None:
    node = resolve_profile({"extends": "h100-80gb", "gpu": {"count": 1}}, "hardware")
    time_sliced = Replica("a", 0, (Share(4 * GiB),), "shared", GiB)
    mig = Replica("b", 0, (Share(10 * 10**9, 1),), "partitioned", GiB)
    assert packs([time_sliced, time_sliced], 1, node)
    assert not packs([time_sliced, mig], 1, node)
