"""Where a service meets its hardware: profile defaults become explicit fields, explicit fields win."""

from __future__ import annotations

from typing import Any

import pytest

from llmkube_components.errors import ConfigError
from tests.stacks import load_stack

MODEL = {"source": "https://example.com/qwen.gguf"}


def resolve(service: dict[str, Any], hardware: Any = "dual-rtx5060ti", model: dict[str, Any] | None = None):
    stack = load_stack(
        {"hardware": hardware, "models": {"m": model or MODEL}, "services": {"s": {"modelRef": "m", **service}}}
    )
    return stack.services["s"]


@pytest.mark.parametrize(
    ("service", "hardware", "field", "expected"),
    [
        ({}, "dual-rtx5060ti", "gpus", 2),
        ({}, "rtx4090", "gpus", 1),
        ({}, "cpu-only", "gpus", 0),
        ({"resources": {"gpu": 1}}, "dual-rtx5060ti", "gpus", 1),
        ({"resources": {"gpu": 0}}, "dual-rtx5060ti", "gpus", 0),
        ({}, "dual-rtx5060ti", "image", "ghcr.io/ggml-org/llama.cpp:server-cuda13"),
        ({}, "rtx4090", "image", "ghcr.io/ggml-org/llama.cpp:server-cuda"),
        ({}, "cpu-only", "image", "ghcr.io/ggml-org/llama.cpp:server"),
        ({"image": "registry.local/llama:mine"}, "rtx4090", "image", "registry.local/llama:mine"),
        ({}, "dual-rtx5060ti", "nodeSelector", {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-5060-Ti"}),
        ({}, "cpu-only", "nodeSelector", None),
        (
            {"nodeSelector": {"zone": "desk"}},
            "rtx4090",
            "nodeSelector",
            {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-4090", "zone": "desk"},
        ),
        (
            {"nodeSelector": {"nvidia.com/gpu.product": "other"}},
            "rtx4090",
            "nodeSelector",
            {"nvidia.com/gpu.product": "other"},
        ),
        (
            {},
            "dual-rtx5060ti",
            "tolerations",
            [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        ),
        # A CPU-only service is still pinned to the profile's (tainted) nodes, so it tolerates their taints.
        (
            {"resources": {"gpu": 0}},
            "dual-rtx5060ti",
            "tolerations",
            [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        ),
        (
            {"resources": {"gpu": 0}},
            "dual-rtx5060ti",
            "nodeSelector",
            {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-5060-Ti"},
        ),
        ({}, {"extends": "dual-rtx5060ti", "gpu": {"count": 1}}, "gpus", 1),
    ],
)
def test_profile_defaults_and_explicit_fields(
    service: dict[str, Any], hardware: Any, field: str, expected: Any
) -> None:
    svc = resolve(service, hardware)
    wire = svc.spec.wire()
    actual = svc.gpu_count if field == "gpus" else wire.get(field)
    assert actual == expected


def test_a_service_may_name_its_own_profile() -> None:
    svc = resolve({"hardwareProfile": "rtx4090"}, hardware="cpu-only")
    assert (svc.profile.name, svc.gpu_count) == ("rtx4090", 1)
    assert "hardwareProfile" not in svc.spec.wire()


def test_model_gets_gpu_hardware_from_the_profile_when_it_has_none() -> None:
    stack = load_stack({"hardware": "rtx4090", "models": {"m": MODEL}, "services": {"s": {"modelRef": "m"}}})
    assert stack.models["m"].spec.wire()["hardware"] == {
        "accelerator": "cuda",
        "gpu": {"enabled": True, "count": 1, "vendor": "nvidia"},
    }
    assert stack.services["s"].model.spec == stack.models["m"].spec


def test_explicit_model_hardware_is_kept() -> None:
    hardware = {"accelerator": "cuda", "gpu": {"count": 2, "vendor": "nvidia", "layers": 40}}
    stack = load_stack(
        {
            "hardware": "dual-rtx5060ti",
            "models": {"m": {**MODEL, "hardware": hardware}},
            "services": {"s": {"modelRef": "m"}},
        }
    )
    assert stack.models["m"].spec.wire()["hardware"] == hardware


def test_resolution_is_idempotent_on_effective_specs() -> None:
    # Components re-resolve the effective specs the Platform hands them: nothing may change the second time.
    first = load_stack({"hardware": "dual-rtx5060ti", "models": {"m": MODEL}, "services": {"s": {"modelRef": "m"}}})
    svc = first.services["s"]
    second = load_stack(
        {
            "hardware": svc.profile.model_dump(by_alias=True, exclude_none=True),
            "models": {"m": svc.model.spec.wire()},
            "services": {"s": svc.spec.wire()},
        }
    )
    assert second.services["s"].spec == svc.spec
    assert second.models["m"].spec == svc.model.spec


def test_one_model_on_two_gpu_vendors_needs_explicit_hardware() -> None:
    amd = {
        "extends": "rtx4090",
        "name": "amd-card",
        "gpu": {"vendor": "amd", "product": "Radeon"},
        "nodeSelector": None,
        "image": "ghcr.io/ggml-org/llama.cpp:server-rocm",
    }
    with pytest.raises(ConfigError) as info:
        load_stack(
            {
                "hardware": "rtx4090",
                "models": {"m": MODEL},
                "services": {"a": {"modelRef": "m"}, "b": {"modelRef": "m", "hardwareProfile": amd}},
            }
        )
    assert str(info.value).startswith(
        "llmkube:models.m.hardware: services a and b use this model on different GPU kinds"
    )


def test_gpus_beyond_the_profile_are_an_error_with_numbers() -> None:
    with pytest.raises(ConfigError) as info:
        resolve({"resources": {"gpu": 3}})
    assert str(info.value) == (
        "llmkube:services.s.resources.gpu: 3 GPUs requested, but the hardware profile dual-rtx5060ti has 2 GPUs; "
        "ask for at most 2 or pick a profile with more"
    )


def test_host_memory_above_the_profile_is_an_error_with_numbers() -> None:
    with pytest.raises(ConfigError) as info:
        resolve({"resources": {"hostMemory": "62Gi"}})
    assert str(info.value) == (
        "llmkube:services.s.resources.hostMemory: 62Gi (62.0 GiB) is more than the hardware profile dual-rtx5060ti "
        "has: 60.0 GiB usable of 64.0 GiB RAM after its reserve; lower it or pick a profile with more RAM"
    )


def test_the_reference_stack_fits_its_profile() -> None:
    svc = resolve({"resources": {"gpu": 2, "cpu": "8", "hostMemory": "48Gi"}, "moeCPUOffload": True})
    assert svc.gpu_count == 2


def test_builder_checks_are_reported_together_at_load_time() -> None:
    # What only the builders can check (a file-less hf:// source, a port in extraArgs) is found by
    # load_stack, for every service at once: llmkube check and pulumi preview show the whole list.
    with pytest.raises(ConfigError) as info:
        load_stack(
            {
                "models": {"m": {"source": "hf://org/repo"}, "ok": MODEL},
                "services": {"s": {"modelRef": "m"}, "t": {"modelRef": "ok", "extraArgs": ["--port", "9000"]}},
            }
        )
    assert {p.path for p in info.value.problems} == {"models.m.source", "services.t.extraArgs[0]"}


@pytest.mark.parametrize(
    ("config", "path", "message"),
    [
        (
            {"delivery": "operator", "namespace": "ai", "operator": {"namespace": "ai"}},
            "operator.namespace",
            "'ai' is also llmkube:namespace",
        ),
        (
            {
                "hardware": "rtx4090",
                "models": {"m": {**MODEL, "hardware": {"gpu": {"count": 2}}}},
                "services": {"s": {"modelRef": "m"}},
            },
            "models.m.hardware.gpu.count",
            "2 GPUs requested, but the hardware profile rtx4090 has 1 GPU",
        ),
        (
            {
                "hardware": "cpu-only",
                "models": {"m": MODEL},
                "services": {"s": {"modelRef": "m", "resources": {"cpu": "64"}}},
            },
            "services.s.resources.cpu",
            "64 CPUs requested, but the hardware profile cpu-only has 8 cores",
        ),
    ],
)
def test_stack_level_checks(config: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_stack(config)
    assert any(p.path == path and p.message.startswith(message) for p in info.value.problems), info.value.problems


def test_replicas_beside_autoscaling_is_a_warning() -> None:
    stack = load_stack(
        {
            "models": {"m": MODEL},
            "services": {"s": {"modelRef": "m", "replicas": 3, "autoscaling": {"maxReplicas": 4}}},
        },
        plan=False,
    )
    # (observability.autoscaler's own warning, about the custom metric, is tested in test_observability.py)
    assert [str(w) for w in stack.warnings if w.path.startswith("services.")] == [
        "llmkube:services.s.replicas: 3 is not used: with autoscaling the autoscaler sets the replica count "
        "between autoscaling.minReplicas and maxReplicas"
    ]


def test_omlx_fields_are_reported_as_unused() -> None:
    from llmkube_components.resolve import resolve_stack, validate_stack

    raw = {
        "models": {"m": {"source": "https://example.com/m.gguf"}},
        "services": {"s": {"modelRef": "m", "turboQuantBits": 6, "pagedSSDCacheDir": "/ssd"}},
    }
    warnings = [str(w) for w in resolve_stack(validate_stack(raw)).warnings]
    assert "llmkube:services.s.turboQuantBits: 6 is not used: only the oMLX runtime" in " ".join(warnings)
    assert any(w.startswith("llmkube:services.s.pagedSSDCacheDir: '/ssd' is not used") for w in warnings)


@pytest.mark.parametrize(
    ("sharing", "memory"),
    [
        ({"mode": "shared", "memoryLimitGiB": 8}, str(8 * 2**30)),  # planned against its share
        ({"mode": "partitioned", "profile": "1g.10gb"}, str(10 * 10**9)),  # a MIG slice's memory
        ({"mode": "shared", "memoryLimitGiB": 64}, "24564Mi"),  # more than the GPU: the GPU's
        ({"mode": "exclusive"}, "24564Mi"),
    ],
)
def test_a_gpu_share_is_planned_as_the_memory_it_may_use(sharing: dict[str, Any], memory: str) -> None:
    from llmkube_components.resolve import resolve_stack, validate_stack

    raw = {
        "hardware": "rtx4090",
        "models": {"m": {"source": "https://example.com/m-Q4_K_M.gguf", "catalog": "Qwen3-30B-A3B"}},
        "services": {"s": {"modelRef": "m", "resources": {"gpuSharing": sharing}}},
    }
    profile = resolve_stack(validate_stack(raw)).services["s"].profile
    assert profile.gpu is not None and profile.gpu.memory == memory
