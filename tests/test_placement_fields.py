"""gpuLayers and tensorSplit: the service-level placement fields offload: auto writes, in both deliveries."""

from __future__ import annotations

import os
from typing import Any

import pytest

from llmkube_components import pipeline
from llmkube_components.errors import ConfigError
from llmkube_components.settings import Settings

QWEN27 = "https://h/Qwen3.5-27B-Q8_0.gguf"
CODER = "https://h/Qwen3-Coder-30B-A3B-Q4_K_M.gguf"


def build(service: dict[str, Any], *, delivery: str = "direct", hardware: Any = "rtx4090", source: str = QWEN27) -> Any:
    raw = {
        "delivery": delivery,
        "hardware": hardware,
        "models": {"m": {"source": source}},
        "services": {"s": {"modelRef": "m", **service}},
    }
    return pipeline.platform(raw, Settings.from_env(os.environ)).services["s"]


def arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_direct_renders_the_partial_offload_auto_chose() -> None:
    built = build({"contextSize": 32768})
    layers = built.plan.chosen.fields["gpuLayers"]
    assert arg(built.server_args, "--n-gpu-layers") == str(layers)


def test_operator_gets_the_partial_offload_as_extra_args_after_the_users() -> None:
    built = build({"contextSize": 32768, "extraArgs": ["--mlock"]}, delivery="operator")
    spec = built.custom_resource["spec"]
    layers = built.plan.chosen.fields["gpuLayers"]
    assert "gpuLayers" not in spec and "tensorSplit" not in spec  # llmkube only: not in the operator's API
    assert spec["extraArgs"] == ["--mlock", "--n-gpu-layers", str(layers)]


def test_a_users_own_flag_in_extra_args_is_not_repeated_for_the_operator() -> None:
    built = build(
        {"contextSize": 4096, "gpuLayers": 40, "extraArgs": ["-ngl", "30"], "resources": {"hostMemory": "40Gi"}},
        delivery="operator",
    )
    assert built.custom_resource["spec"]["extraArgs"] == ["-ngl", "30"]


def test_auto_balances_the_gpus_after_moving_the_first_layers_experts() -> None:
    # Issue 14: after --n-cpu-moe N only GPU 0 was freed; llama.cpp's fitter shifts layers to balance them.
    built = build({"contextSize": 262144, "parallelSlots": 1}, hardware="dual-rtx5060ti", source=CODER)
    chosen = built.plan.chosen
    assert "moeCPULayers" in chosen.fields, chosen.label
    shares = chosen.fields["tensorSplit"]
    assert arg(built.server_args, "--tensor-split") == ",".join(str(int(s)) for s in shares)
    assert chosen.fits and all(g.weights > 0 for g in chosen.memory.gpus)
    # The same experts in RAM with even shares leave GPU 1 over its memory: the balance is what makes it fit.
    even = {"contextSize": 262144, "parallelSlots": 1, "moeCPULayers": chosen.fields["moeCPULayers"]}
    with pytest.raises(ConfigError) as info:
        build(even, hardware="dual-rtx5060ti", source=CODER)
    assert "gpu1 needs" in str(info.value) and f"tensor-split {pipeline_split(shares)}" in str(info.value)


def pipeline_split(shares: list[float]) -> str:
    return ",".join(str(int(s)) for s in shares)


@pytest.mark.parametrize(
    ("service", "hardware", "message"),
    [
        (
            {"tensorSplit": [1, 2, 3]},
            "dual-rtx5060ti",
            "llmkube:services.s.tensorSplit: [1.0, 2.0, 3.0] has 3 entries, but the service runs on 2 GPUs",
        ),
        (
            {"tensorSplit": [0, 0]},
            "dual-rtx5060ti",
            "llmkube:services.s.tensorSplit: [0.0, 0.0] gives no GPU a share",
        ),
        (
            {"tensorSplit": [1]},
            "rtx4090",
            "llmkube:services.s.tensorSplit: [1.0] is not used: the service runs on 1 GPU(s)",
        ),
    ],
)
def test_a_tensor_split_that_cannot_be_used_is_an_error(service: dict[str, Any], hardware: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build({"contextSize": 4096, **service}, hardware=hardware, source=CODER)
    assert message in str(info.value)
