"""A model across several nodes (multiNode, llama.cpp RPC): the planner splits the layers over every node's
devices by memory, counts the network in the speed estimate, weighs group sizes under size auto, and says with
the numbers when no allowed node count fits."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from llmkube_components.errors import ConfigError
from llmkube_components.hardware import resolve_profile
from llmkube_components.planner.memory import HOST, Placement, gpu_name, plan_memory
from llmkube_components.planner.plan import WORKER_HOST_MEMORY, machine, remote_machine
from llmkube_components.planner.throughput import RPC_STEP_SECONDS, network_seconds
from tests.stacks import load_stack
from tests.test_planner_memory import moe

QWEN27 = "https://h/Qwen3.5-27B-Q8_0.gguf"  # dense 27B at Q8_0: about 27 GiB of weights
GPT_OSS = "https://h/gpt-oss-120b-mxfp4.gguf"  # MoE 117B in MXFP4: about 61 GiB
GiB = 2**30
# 24 GB nodes, counted: two of them may hold one group
RTX4090_X2 = {"extends": "rtx4090", "nodes": 2}


def stack(service: dict[str, Any], hardware: Any = RTX4090_X2, source: str = QWEN27) -> Any:
    return load_stack(
        {
            "hardware": hardware,
            "models": {"m": {"source": source}},
            "services": {"s": {"modelRef": "m", "contextSize": 32768, **service}},
        }
    )


def error(service: dict[str, Any], hardware: Any = RTX4090_X2, source: str = QWEN27) -> str:
    with pytest.raises(ConfigError) as info:
        stack(service, hardware, source)
    return str(info.value)


# ---------------------------------------------------------------------------------------------------------
# Splitting the layers over the nodes
# ---------------------------------------------------------------------------------------------------------


def test_a_dense_27b_that_fits_no_24gb_node_fits_two_of_them_whole() -> None:
    alone = stack({}).plans["s"]
    assert alone.chosen.memory.host.weights > 0  # one node: some layers stay on the CPU
    loaded = stack({"multiNode": {"size": 2}})
    plan = loaded.plans["s"]
    assert plan.chosen.fits and plan.nodes == 2
    assert plan.chosen.memory.host.weights == plan.chosen.memory.host["token_embd"]  # every layer on a device
    # The worker's GPU comes first (llama.cpp puts RPC devices before its own), the server's holds the output.
    assert plan.device_names() == {"gpu0": "rank 1 GPU 0 (rtx4090)", "gpu1": "rank 0 GPU 0"}
    assert plan.chosen.memory.layer_devices[0] == "gpu0" and plan.chosen.memory.layer_devices[-1] == "gpu1"
    service = loaded.services["s"]
    assert service.spec.multi_node.size == 2
    assert service.spec.tensor_split == [33.0, 33.0]
    assert service.device_count == 2
    assert service.worker_host_memory == (WORKER_HOST_MEMORY,)
    assert plan.output()["nodes"] == 2
    assert plan.chosen.speed.decode_tokens_per_second > 2 * alone.chosen.speed.decode_tokens_per_second


def test_devices_of_different_sizes_get_layers_by_their_memory() -> None:
    # Rank 1 is a 48 GB card, rank 0 a 24 GB one: the larger takes about twice the layers, and both are about
    # as full (each device's share of its usable memory).
    big = {"extends": "rtx4090", "name": "big-card", "gpu": {"memory": "49140Mi"}}
    plan = stack({"multiNode": {"size": 2, "members": [{"rank": 1, "hardwareProfile": big}]}}).plans["s"]
    counts = [sum(1 for d in plan.chosen.memory.layer_devices if d == g) for g in ("gpu0", "gpu1")]
    assert counts[0] > 1.6 * counts[1]
    usable = [resolve_profile(big, "x").usable_gpu_memory, resolve_profile("rtx4090", "x").usable_gpu_memory]
    fill = [plan.chosen.memory.device(g).total / u for g, u in zip(("gpu0", "gpu1"), usable, strict=True)]
    assert abs(fill[0] - fill[1]) < 0.12


def test_a_cpu_worker_serves_its_ram_as_a_device_and_asks_for_it() -> None:
    loaded = stack({"multiNode": {"size": 2, "members": [{"rank": 1, "hardwareProfile": "cpu-only"}]}})
    plan = loaded.plans["s"]
    assert plan.device_names()["gpu0"] == "rank 1 CPU (cpu-only)"
    held = plan.chosen.memory.device("gpu0").total
    assert held > 5 * GiB
    (request,) = loaded.services["s"].worker_host_memory
    assert held * 1.1 <= request < held * 1.1 + GiB
    # No CUDA runtime on a CPU worker's device.
    assert plan.chosen.memory.device("gpu0")["runtime"] == 0


def test_placement_rpc_devices_keep_op_offload_on_the_servers_own_gpu() -> None:
    facts = moe()
    # Two worker devices (a GPU and a CPU), then the server's own GPU; the experts in RAM (--cpu-moe).
    remote = Placement(gpu_count=3, cpu_moe=True, rpc_devices=(True, False))
    memory = plan_memory(facts, remote, context_size=4096)
    local = plan_memory(facts, Placement(gpu_count=3, cpu_moe=True), context_size=4096)
    assert remote.first_local == gpu_name(2)
    # ggml-cuda copies the host experts of one layer to the first own GPU per ubatch; ggml-rpc offloads no ops.
    copy = local.device(gpu_name(0))["compute"] - memory.device(gpu_name(0))["compute"]
    assert copy > 0
    assert memory.device(gpu_name(2))["compute"] - local.device(gpu_name(2))["compute"] == copy
    assert memory.device(gpu_name(1))["runtime"] == 0 < memory.device(gpu_name(0))["runtime"]
    assert memory.host["runtime"] == local.host["runtime"]  # the server has a GPU: the CUDA libraries in RAM
    cpu_head = plan_memory(facts, Placement(gpu_count=1, rpc_devices=(True,)), context_size=4096)
    assert cpu_head.host["runtime"] < local.host["runtime"]  # no GPU of its own: no CUDA libraries
    assert cpu_head.host["compute"] > 0


# ---------------------------------------------------------------------------------------------------------
# The network in the speed estimate
# ---------------------------------------------------------------------------------------------------------


def worker(link: str, round_trip: int = 200) -> Any:
    return resolve_profile({"extends": "rtx4090", "network": {"link": link, "roundTripMicroseconds": round_trip}}, "x")


@pytest.mark.parametrize(
    ("path", "visits"),
    [
        (["host", "gpu0", "gpu0", "gpu1", "gpu1"], 1),  # one worker, then the server's GPU
        (["host", "gpu0", "gpu1", "gpu0", "gpu1"], 2),  # back to the worker: a second visit
        (["host", "gpu1", "gpu1"], 0),  # never leaves the server's node
        (["host", "gpu0", "gpu2", "gpu1"], 1),  # gpu1 and gpu2 are the server's own: one visit to rank 1
    ],
)
def test_every_visit_to_a_worker_is_a_round_trip_and_the_hidden_state_both_ways(path: list[str], visits: int) -> None:
    head = worker("10GbE")
    remote = remote_machine(head, [worker("10GbE")])  # gpu0: rank 1
    m = dataclasses.replace(machine(head), remote=remote)
    one = 200e-6 + 2 * 4096 * 4 / (1.25e9 * 0.9)
    fixed = RPC_STEP_SECONDS if visits else 0.0
    assert network_seconds(path, m, tokens=1, n_embd=4096) == pytest.approx(visits * one + fixed)


def test_two_workers_in_a_row_are_two_visits() -> None:
    head = worker("10GbE")
    remote = remote_machine(head, [worker("10GbE"), worker("10GbE")])
    assert [r.rank for r in remote.values()] == [1, 2]
    m = dataclasses.replace(machine(head), remote=remote)
    one = network_seconds(["host", "gpu0", "gpu2"], m, 1, 4096) - RPC_STEP_SECONDS
    assert network_seconds(["host", "gpu0", "gpu1", "gpu2"], m, 1, 4096) == pytest.approx(2 * one + RPC_STEP_SECONDS)


def test_the_link_is_the_slower_end_and_a_slower_link_is_slower() -> None:
    slow = remote_machine(worker("10GbE"), [worker("1GbE", 500)])["gpu0"]
    assert slow.network_bandwidth == 125e6 and slow.round_trip == pytest.approx(500e-6)

    def figures(link: str) -> Any:
        hw = {"extends": "rtx4090", "nodes": 2, "network": {"link": link}}
        return stack({"multiNode": {"size": 2}}, hardware=hw).plans["s"].chosen.speed

    fast, slow_speed = figures("10GbE"), figures("1GbE")
    assert fast.seconds_by_part["network"] < slow_speed.seconds_by_part["network"]
    assert fast.decode_tokens_per_second > slow_speed.decode_tokens_per_second
    # A prompt's ubatch sends 512 tokens' hidden state: the link shows much more in prefill than in decode.
    assert fast.prefill_tokens_per_second > 1.2 * slow_speed.prefill_tokens_per_second


def test_the_plan_says_what_the_network_costs_and_what_a_start_sends() -> None:
    plan = stack({"multiNode": {"size": 2}}).plans["s"]
    advice = plan.advice[-1]
    assert advice.startswith("the network between the 2 nodes takes ")
    assert "llama-server sends the workers 12." in advice and "GiB of weights" in advice


# ---------------------------------------------------------------------------------------------------------
# size auto, and what does not fit
# ---------------------------------------------------------------------------------------------------------


def test_size_auto_keeps_one_node_when_the_model_fits_it_whole() -> None:
    llama = "https://h/Llama-3.1-8B-Q4_K_M.gguf"
    plan = stack({"multiNode": {"size": "auto"}}, source=llama).plans["s"]
    assert plan.nodes == 1 and plan.workers == ()


def test_size_auto_takes_the_fastest_group_that_fits() -> None:
    loaded = stack({"multiNode": {"size": "auto", "maxSize": 3}}, hardware={"extends": "rtx4090", "nodes": 3})
    plan = loaded.plans["s"]
    assert plan.nodes == 2  # all on the GPUs of two nodes beats the CPU layers of one and a third node's hop
    assert loaded.services["s"].spec.multi_node.size == 2
    labels = [c["placement"] for c in plan.output()["candidates"]]
    assert any(label.startswith("all layers on the devices of 3 nodes") for label in labels)
    assert any(label.startswith("--n-gpu-layers") for label in labels)  # the single node's best was weighed


def test_size_auto_stops_at_the_nodes_the_stack_counts_and_says_so() -> None:
    loaded = stack({"multiNode": {"size": "auto"}}, hardware="rtx4090")
    assert loaded.plans["s"].nodes == 1
    (warning,) = [str(w) for w in loaded.warnings if w.path.endswith("multiNode.size")]
    assert warning == (
        "llmkube:services.s.multiNode.size: auto tried at most 1 of the 4 nodes maxSize allows: the stack counts "
        "1 node of rtx4090 (hardware nodes); give the profiles their nodes (nodes: N) to let the group grow"
    )


def test_a_group_larger_than_the_pool_fails_with_the_nodes_it_needs() -> None:
    message = error({"multiNode": {"size": 2}}, hardware="rtx4090")
    assert message.startswith("llmkube:hardware: rtx4090 (1 node of 1 x 23.5 GiB GPU and 60.0 GiB RAM usable) cannot")
    assert "s rank 0 (llama-server) 1 replica x (1 GPU, " in message
    assert "s rank 1 (ggml-rpc-server) 1 replica x (1 GPU, 1.0 GiB RAM)" in message
    assert "they need 2 nodes of rtx4090, the stack has 1 node" in message


def test_a_model_that_fits_no_allowed_node_count_fails_with_the_numbers() -> None:
    # gpt-oss-120b (61 GiB) on 16 GB cards with 16 GiB of RAM each: no count up to 3 holds it.
    card = {"extends": "dual-rtx5060ti", "name": "one-5060ti", "gpu": {"count": 1}, "hostMemory": "16Gi", "nodes": 3}
    message = error({"multiNode": {"size": "auto", "maxSize": 3}}, hardware=card, source=GPT_OSS)
    assert message.startswith("llmkube:services.s: fits no allowed number of nodes (1, 2, 3): 1 node with ")
    for n in (2, 3):
        assert f" | {n} nodes with " in message
    assert "gpu0 needs " in message and "usable (" in message and " short)" in message
    assert "allow more nodes (multiNode size or maxSize, now at most 3, and the profiles' nodes)" in message


def test_a_fixed_size_that_does_not_fit_names_its_shortfalls() -> None:
    card = {"extends": "dual-rtx5060ti", "name": "one-5060ti", "gpu": {"count": 1}, "hostMemory": "16Gi", "nodes": 2}
    message = error({"multiNode": {"size": 2}}, hardware=card, source=GPT_OSS)
    assert message.startswith("llmkube:services.s: fits no allowed number of nodes (2): 2 nodes with ")


@pytest.mark.parametrize(
    ("service", "stack_keys", "expected"),
    [
        (
            {"multiNode": {"size": 2}},
            {"delivery": "operator"},
            "llmkube:services.s.multiNode: delivery operator cannot serve it: the LLMKube operator's multiNode runs "
            "vLLM only (llama.cpp RPC members are an open request upstream, LLMKube #1753); use delivery direct",
        ),
        (
            {"multiNode": {"size": 2}, "replicas": 2},
            {},
            "llmkube:services.s.multiNode: replicas 2: a multi-node group is one replica (each worker's "
            "ggml-rpc-server serves a single llama-server); remove it, or serve more replicas as separate services",
        ),
        (
            {"multiNode": {"size": "auto"}, "moeCPUOffload": True},
            {},
            "llmkube:services.s.multiNode.size: auto needs offload auto (the planner picks the size with the "
            "placement); give a node count, or leave the placement fields to the planner",
        ),
        (
            {"multiNode": {"size": 2, "members": [{"rank": 1, "nodeName": "a"}, {"rank": 0, "nodeName": "a"}]}},
            {},
            "llmkube:services.s.multiNode: members: node a is given to two members; each member runs on a node of "
            "its own",
        ),
        (
            {"multiNode": {"size": 3, "maxSize": 4}},
            {},
            "llmkube:services.s.multiNode: maxSize 4 needs size auto, not 3",
        ),
        (
            {"multiNode": {"size": 17}},
            {},
            "llmkube:services.s.multiNode.size: 17 is not a node count from 1 to 16 or auto",
        ),
    ],
)
def test_what_a_group_cannot_be(service: dict[str, Any], stack_keys: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_stack(
            {
                "hardware": RTX4090_X2,
                "models": {"m": {"source": QWEN27}},
                "services": {"s": {"modelRef": "m", "contextSize": 32768, **service}},
                **stack_keys,
            }
        )
    assert expected in str(info.value).splitlines()


@pytest.mark.parametrize(
    ("service", "paths"),
    [
        ({"multiNode": {"size": 2}}, ["services.s.image", "services.s.multiNode.workerImage"]),
        ({"multiNode": {"size": 2, "workerImage": "registry.example/llama.cpp:rpc-b7000"}}, ["services.s.image"]),
        ({"multiNode": {"size": 2}, "image": "registry.example/llama.cpp:rpc-b7000"}, []),
        ({"multiNode": {"size": 1}}, []),
    ],
)
def test_llama_cpps_published_images_are_named_as_lacking_rpc(service: dict[str, Any], paths: list[str]) -> None:
    warnings = [w for w in stack(service).warnings if "-DGGML_RPC=ON" in w.message]
    assert [w.path for w in warnings] == paths
    if paths:
        assert str(warnings[0]) == (
            "llmkube:services.s.image: ghcr.io/ggml-org/llama.cpp:server-cuda is one of llama.cpp's published "
            "images, built without -DGGML_RPC=ON: its llama-server refuses --rpc; build one image with "
            "-DGGML_RPC=ON for both ends (README: Several nodes)"
        ) or paths == ["services.s.image"]


def test_a_single_node_service_plans_as_before() -> None:
    plain = stack({}).plans["s"]
    one = stack({"multiNode": {"size": 1}}).plans["s"]
    assert one.chosen.label == plain.chosen.label
    assert one.chosen.memory == plain.chosen.memory
    assert one.workers == () and "nodes" not in one.output()
    assert HOST in plain.chosen.memory.totals()


def test_the_plan_command_plans_a_group(capsys: pytest.CaptureFixture[str]) -> None:
    from llmkube_components import cli

    args = ["plan", "--profile", "rtx4090", "--model", "Qwen3.5-27B", "--quantization", "Q8_0", "--context", "32768"]
    assert cli.main([*args, "--nodes", "auto", "--max-nodes", "3", "--link", "10GbE", "--json"]) == 0
    import json

    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["nodes"] == 2 and plan["devices"] == {"gpu0": "rank 1 GPU 0 (rtx4090+custom)", "gpu1": "rank 0 GPU 0"}
    args_text = " ".join(plan["serverArgs"])
    assert "--rpc plan-rpc-1.llmkube.svc:50052 --n-gpu-layers 99 " in args_text
    assert "--tensor-split 33,33" in args_text
    assert cli.main([*args, "--nodes", "2"]) == 0
    assert "devices: gpu0: rank 1 GPU 0 (rtx4090); gpu1: rank 0 GPU 0" in capsys.readouterr().out
