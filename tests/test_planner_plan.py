"""The planner inside the stack: settings read from the rendered arguments, the auto decision at its
boundaries, checks of explicit settings, and the decision reaching both deliveries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmkube_components.api import parse_quantity
from llmkube_components.errors import ConfigError
from llmkube_components.planner.memory import Placement
from llmkube_components.planner.plan import GiB, settings_from_args
from testkit.gguf_files import write_moe
from tests.stacks import load_stack

QWEN36 = "https://huggingface.co/ggml-org/Qwen3.6-35B-A3B-GGUF/resolve/main/Qwen3.6-35B-A3B-Q4_K_M.gguf"


@pytest.mark.parametrize(
    ("args", "gpus", "expected"),
    [
        ([], 0, Placement(gpu_count=0, n_gpu_layers=0)),
        (
            ["--n-gpu-layers", "99", "--split-mode", "layer", "--tensor-split", "1,1"],
            2,
            Placement(gpu_count=2, tensor_split=(1.0, 1.0)),
        ),
        (["--cpu-moe", "--no-kv-offload"], 1, Placement(gpu_count=1, cpu_moe=True, no_kv_offload=True)),
        (["-ncmoe", "12", "-ngl", "20"], 1, Placement(gpu_count=1, n_cpu_moe=12, n_gpu_layers=20)),
        (["-nkvo", "--kv-offload"], 1, Placement(gpu_count=1)),
        (
            ["--override-tensor", "exps=CPU", "-ot", "attn=CUDA0"],
            1,
            Placement(gpu_count=1, overrides=(("exps", "CPU"), ("attn", "CUDA0"))),
        ),
    ],
)
def test_placement_is_read_from_the_rendered_arguments(args: list[str], gpus: int, expected: Placement) -> None:
    assert settings_from_args(args, gpus).placement == expected


def test_other_settings_are_read_too() -> None:
    s = settings_from_args(
        [
            "--ctx-size",
            "90112",
            "--parallel",
            "2",
            "-ctk",
            "q8_0",
            "--cache-type-v",
            "q4_0",
            "-ub",
            "256",
            "--cache-ram",
            "0",
        ],
        1,
    )
    assert (s.context_size, s.parallel, s.cache_type_k, s.cache_type_v, s.ubatch, s.cache_ram_mib) == (
        90112, 2, "q8_0", "q4_0", 256, 0,
    )  # fmt: skip


def stack(service: dict[str, Any], hardware: Any = "dual-rtx5060ti", source: str = QWEN36) -> Any:
    local = source.startswith("/")  # a generated file on this machine: a node path, allowed explicitly
    return load_stack(
        {"hardware": hardware, "allowHostPath": local, "models": {"m": {"source": source}},
         "services": {"s": {"modelRef": "m", **service}}}
    )  # fmt: skip


def gpu_profile(usable_bytes: int) -> dict[str, Any]:
    # One GPU whose usable memory is exactly usable_bytes (a reserve of one byte; profiles need one).
    return {"extends": "rtx4090", "gpu": {"memory": str(usable_bytes + 1)}, "reserved": {"gpuMemory": "1"}}


def test_auto_puts_everything_on_the_gpus_when_it_fits() -> None:
    svc_stack = stack({"contextSize": 32768})
    plan = svc_stack.plans["s"]
    assert (plan.mode, plan.chosen.label) == ("auto", "all layers on the GPUs")
    spec = svc_stack.services["s"].spec
    assert (spec.moe_cpu_offload, spec.moe_cpu_layers, spec.no_kv_offload) == (None, None, None)
    assert spec.resources.host_memory == f"{plan.host_memory_request // GiB}Gi"


def test_auto_picks_the_smallest_n_cpu_moe_at_the_byte_boundary() -> None:
    # Size a GPU to exactly what --n-cpu-moe 20 needs: 20 is chosen; one byte less and 21 is.
    probe = stack({"contextSize": 8192, "moeCPULayers": 20, "resources": {"gpu": 1}}, hardware="h100-80gb")
    need = probe.plans["s"].chosen.memory.gpus[0].total
    exact = stack({"contextSize": 8192}, hardware=gpu_profile(need)).plans["s"]
    assert exact.chosen.label.startswith("--n-cpu-moe 20 ")
    assert exact.chosen.memory.gpus[0].total == need
    less = stack({"contextSize": 8192}, hardware=gpu_profile(need - 1)).plans["s"]
    assert less.chosen.label.startswith("--n-cpu-moe 21 ")


def test_auto_chooses_the_fastest_placement_that_fits() -> None:
    probe = stack({"contextSize": 65536, "moeCPUOffload": True, "resources": {"gpu": 1}}, hardware="h100-80gb")
    need = probe.plans["s"].chosen.memory.gpus[0].total
    for room in (need, need - 1):
        plan = stack({"contextSize": 65536}, hardware=gpu_profile(room)).plans["s"]
        assert plan.chosen.fits
        fitting = [o for o in plan.alternatives if o.fits]
        assert all(plan.chosen.ranking >= o.ranking for o in fitting)
        labels = [o.label for o in (plan.chosen, *plan.alternatives)]
        assert "all layers on the GPUs" in labels and "--cpu-moe (all routed experts in RAM)" in labels
        cpu_moe = next(o for o in (plan.chosen, *plan.alternatives) if o.label.startswith("--cpu-moe ("))
        assert cpu_moe.fits is (room == need)
        assert plan.advice[0].startswith(f"chose {plan.chosen.label} (")


def test_partial_gpu_layers_run_a_dense_model_that_does_not_fit_whole() -> None:
    # Issue 14: Qwen3.5-27B at Q8_0 with 32K context on one RTX 4090 used to fail ("gpu0 needs 25.6 GiB").
    s = stack({"contextSize": 32768}, source="https://h/Qwen3.5-27B-Q8_0.gguf", hardware="rtx4090")
    plan = s.plans["s"]
    assert plan.chosen.fits and "--n-gpu-layers" in plan.chosen.label
    layers = plan.chosen.fields["gpuLayers"]
    assert s.services["s"].spec.gpu_layers == layers
    cpu = [i for i, d in enumerate(plan.chosen.memory.layer_devices) if d == "host"]
    assert cpu == list(range(len(cpu))) and len(cpu) == len(plan.chosen.memory.layer_devices) - layers
    assert any(a.startswith(f"layers 0-{cpu[-1]} run on the CPU") for a in plan.advice)
    # One more layer on the GPU does not fit: the largest that fits was taken.
    more = {
        "contextSize": 32768,
        "gpuLayers": layers + 1,
        **{k: v for k, v in plan.chosen.fields.items() if k != "gpuLayers"},
    }
    with pytest.raises(ConfigError) as info:
        stack(more, source="https://h/Qwen3.5-27B-Q8_0.gguf", hardware="rtx4090")
    assert "does not fit the hardware profile rtx4090" in str(info.value)


def test_a_plan_that_cannot_fit_fails_with_the_numbers() -> None:
    with pytest.raises(ConfigError) as info:
        stack({"contextSize": 262144, "parallelSlots": 4}, hardware=gpu_profile(600 * 2**20))
    message = str(info.value)
    assert message.startswith("llmkube:services.s: does not fit the hardware profile rtx4090+custom")
    assert "gpu0 needs" in message and "short)" in message


def test_explicit_offload_slower_than_a_fitting_placement_gets_advice() -> None:
    s = stack({"contextSize": 32768, "moeCPUOffload": True, "resources": {"hostMemory": "40Gi"}})
    plan = s.plans["s"]
    assert plan.mode == "manual" and s.services["s"].spec.moe_cpu_offload is True
    (advice,) = [str(w) for w in s.warnings if "would fit" in str(w)]
    assert advice.startswith("llmkube:services.s: as configured (moeCPUOffload: True) decodes about ")
    assert "all layers on the GPUs would fit and decode about" in advice


def test_host_memory_below_the_plan_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        stack({"contextSize": 32768, "moeCPUOffload": True, "resources": {"hostMemory": "8Gi"}})
    assert str(info.value).startswith("llmkube:services.s.resources.hostMemory: 8Gi is below the ")


def test_the_catalog_stands_in_when_the_source_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMKUBE_OFFLINE", "0")
    monkeypatch.setenv("LLMKUBE_METADATA_TIMEOUT", "2")
    down = "http://127.0.0.1:9/Qwen3.6-35B-A3B-Q4_K_M.gguf"  # discard port: nothing listens
    plan = stack({"contextSize": 32768}, source=down).plans["s"]
    assert plan.estimate is not None and plan.estimate.startswith("catalog estimate (Qwen3.6-35B-A3B): its metadata")


def test_a_local_gguf_file_is_planned_from_its_own_metadata(tmp_path: Path) -> None:
    path = write_moe(tmp_path / "tiny-moe.gguf", n_layer=4, n_expert=8, n_expert_used=2)
    plan = stack({"contextSize": 4096}, hardware="cpu-only", source=str(path)).plans["s"]
    assert plan.estimate is None and plan.model_source.endswith("tiny-moe.gguf")
    assert plan.chosen.label == "everything in system RAM (no GPU)"


def test_auto_decision_reaches_the_operator_custom_resource() -> None:
    probe = stack({"contextSize": 65536, "moeCPUOffload": True, "resources": {"gpu": 1}}, hardware="h100-80gb")
    need = probe.plans["s"].chosen.memory.gpus[0].total
    s = load_stack(
        {
            "delivery": "operator",
            "hardware": gpu_profile(need),
            "models": {"m": {"source": QWEN36}},
            "services": {"s": {"modelRef": "m", "contextSize": 65536}},
        }
    )
    wire = s.services["s"].spec.wire()
    assert wire["moeCPUOffload"] is True and wire["resources"]["hostMemory"].endswith("Gi")


def test_a_quantized_kv_cache_that_llama_cpp_would_refuse_fails_the_preview(tmp_path: Path) -> None:
    # llama.cpp: "K cache type q8_0 with block size 32 does not divide n_embd_head_k=16".
    from testkit.gguf_files import write_dense

    path = write_dense(tmp_path / "tiny.gguf", head_dim=16, n_embd=64, n_head=4)
    with pytest.raises(ConfigError) as info:
        stack({"contextSize": 4096, "cacheTypeK": "q8_0"}, hardware="cpu-only", source=str(path))
    message = str(info.value)
    assert message.startswith("llmkube:services.s: ") and "q8_0" in message and "16" in message


def test_context_above_the_trained_one_is_a_warning() -> None:
    s = stack({"contextSize": 300000})
    (warning,) = [str(w) for w in s.warnings if "trained on" in str(w)]
    assert warning.startswith(
        "llmkube:services.s.contextSize: 300000 is above the 262144 tokens the model was trained on"
    )


def test_no_fit_error_names_the_largest_context_that_would_fit() -> None:
    small = {"extends": "rtx4090", "gpu": {"memory": str(8 * GiB)}, "hostMemory": "30Gi"}
    with pytest.raises(ConfigError) as info:
        stack({"contextSize": 262144}, hardware=small)
    message = str(info.value)
    assert "even with --cpu-moe and --no-kv-offload" in message and "host needs" in message
    largest = int(message.split("reduce contextSize to at most ")[1].split(",")[0])
    assert stack({"contextSize": largest}, hardware=small).plans["s"].chosen.fits
    with pytest.raises(ConfigError):
        stack({"contextSize": largest + 256}, hardware=small)


def test_auto_clears_offload_fields_it_did_not_choose() -> None:
    s = stack({"contextSize": 32768, "offload": "auto", "moeCPUOffload": True, "noKvOffload": True})
    spec = s.services["s"].spec
    assert s.plans["s"].chosen.label == "all layers on the GPUs"
    assert (spec.moe_cpu_offload, spec.no_kv_offload) == (None, None)


@pytest.mark.parametrize(
    ("extra", "context", "cache_k"),
    [
        (["--mlock", "--ctx-size", "16384"], 16384, "f16"),
        (["--no-mmap", "-ctk", "q4_0"], 0, "q4_0"),
        (["--threads", "8", "-c", "2048"], 2048, "f16"),
    ],
)
def test_unknown_switches_in_extra_args_do_not_swallow_the_next_flag(
    extra: list[str], context: int, cache_k: str
) -> None:
    s = settings_from_args(extra, 1)
    assert (s.context_size, s.cache_type_k) == (context, cache_k)


@pytest.mark.parametrize(
    ("extra", "unified"), [([], None), (["--kv-unified"], True), (["-kvu", "--no-kv-unified"], False)]
)
def test_kv_unified_in_extra_args_is_planned(extra: list[str], unified: bool | None) -> None:
    # Rendered into the command line, so planned too: the flag table is what both read.
    assert settings_from_args(["--parallel", "4", *extra], 1).kv_unified is unified
    s = stack({"contextSize": 16384, "parallelSlots": 4, "extraArgs": extra})
    plain = stack({"contextSize": 16384, "parallelSlots": 4})
    kv = {name: p.plans["s"].chosen.memory.totals() for name, p in (("with", s), ("without", plain))}
    assert (kv["with"] != kv["without"]) is (unified is True), kv


def test_offload_fields_without_experts_or_gpus_are_warned_about() -> None:
    dense = "https://example.com/Llama-3.1-8B-Instruct-Q4_K_M.gguf"
    s = stack({"contextSize": 8192, "moeCPUOffload": True, "resources": {"hostMemory": "20Gi"}}, source=dense)
    assert any("has no effect: the model has no routed experts" in str(w) for w in s.warnings)
    small = "https://example.com/Llama-3.2-1B-Instruct-Q4_K_M.gguf"
    s = stack({"contextSize": 8192, "noKvOffload": True, "resources": {"hostMemory": "12Gi"}}, "cpu-only", small)
    assert any("has no effect: the service runs without GPUs" in str(w) for w in s.warnings)


def test_a_manual_placement_that_does_not_fit_points_at_auto() -> None:
    with pytest.raises(ConfigError) as info:
        stack(
            {"contextSize": 8192, "moeCPULayers": 2, "resources": {"hostMemory": "20Gi"}}, hardware=gpu_profile(8 * GiB)
        )
    message = str(info.value)
    assert "even with as configured (moeCPULayers: 2)" in message
    assert "offload: auto would fit with --n-cpu-moe " in message


def test_calibration_through_the_planner_on_the_reference_home_lab() -> None:
    # The reference home lab measured about 21.7 tokens/s; the planner's own estimate for it is within 10%.
    from tests.pulumi_program import stack_config

    config = {k.removeprefix("llmkube:"): v for k, v in stack_config("dual-5060ti").items() if k.startswith("llmkube:")}
    plan = load_stack(config).plans["qwen36-hybrid"]
    assert plan.chosen.speed.decode_tokens_per_second == pytest.approx(21.7, rel=0.10)


def test_embedding_services_are_planned_too() -> None:
    s = stack({"contextSize": 8192, "mode": "embedding"})
    assert "s" in s.plans


@pytest.mark.parametrize("extra", [["--no-kv-unified"], ["-no-kvu"], ["--kv-unified"]])
def test_without_parallel_llama_server_always_unifies_the_kv_cache(extra: list[str]) -> None:
    # server.cpp: --parallel unset means 4 sequences and a unified cache, whatever --kv-unified says.
    assert settings_from_args(extra, 1).kv_unified is None
    planned = stack({"contextSize": 16384, "extraArgs": extra}).plans["s"].chosen.memory.totals()
    assert planned == stack({"contextSize": 16384}).plans["s"].chosen.memory.totals()


def test_no_repack_in_extra_args_reaches_the_plan() -> None:
    # A CPU-only server repacks Q4_K weights (AMX's layout is larger, counted as repack); --no-repack keeps them
    # in the mapping as they are, and the plan follows the flag the server gets.
    source = "https://h/Llama-3.2-1B-Q4_K_M.gguf"
    repacked = stack({"contextSize": 4096}, hardware="cpu-only", source=source).plans["s"].chosen.memory
    plain = stack({"contextSize": 4096, "extraArgs": ["--no-repack"]}, hardware="cpu-only", source=source)
    memory = plain.plans["s"].chosen.memory
    assert repacked.host["repack"] > 0 and repacked.repacked > 0
    assert memory.host["repack"] == 0 and memory.repacked == 0
    assert "--no-repack" in plain.services["s"].spec.extra_args


def test_threads_from_the_cpu_limit_bound_the_hosts_share_of_the_speed() -> None:
    # resources.cpu renders --threads: experts in RAM computed on 2 of the node's 16 cores decode slower than on 16.
    def decode(cpu: str) -> float:
        service = {"contextSize": 8192, "moeCPUOffload": True, "resources": {"cpu": cpu, "hostMemory": "40Gi"}}
        return stack(service).plans["s"].chosen.speed.decode_tokens_per_second

    assert decode("2") < decode("8") < decode("16")
    assert (
        decode("16")
        == stack({"contextSize": 8192, "moeCPUOffload": True, "resources": {"hostMemory": "40Gi"}})
        .plans["s"]
        .chosen.speed.decode_tokens_per_second
    )  # no limit: a thread per core


@pytest.mark.parametrize("context", [8192, 16384, 32768])
def test_the_memory_request_never_exceeds_the_nodes_usable_memory(context: int) -> None:
    # Qwen3.5-27B Q4_K_M on cpu-only (28 GiB usable) holds 25-26.5 GiB: the margin and the whole GiB used to ask
    # 28-30Gi, which no node of the profile can give (the pod would stay Pending).
    from llmkube_components.hardware import resolve_profile
    from tests.stacks import load_stack

    usable = resolve_profile("cpu-only", "hardware").usable_host_memory
    loaded = load_stack(
        {
            "hardware": "cpu-only",
            "models": {"m": {"source": "https://h/Qwen3.5-27B-Q4_K_M.gguf"}},
            "services": {"s": {"modelRef": "m", "contextSize": context}},
        }
    )
    plan = loaded.plans["s"]
    assert plan.chosen.memory.host.total <= plan.host_memory_request <= usable
    request = loaded.services["s"].spec.resources.host_memory
    assert parse_quantity(request) == plan.host_memory_request
