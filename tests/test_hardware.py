"""Hardware profiles: the built-ins, the usable-memory math, composition with extends, and the errors."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from llmkube_components.api.base import parse_quantity
from llmkube_components.api.model import GpuVendor
from llmkube_components.errors import ConfigError
from llmkube_components.hardware import (
    GpuHardware,
    HardwareProfile,
    builtin_profiles,
    gpu_resource_name,
    merge_patch,
    resolve_profile,
)
from llmkube_components.hardware.profile import (
    VENDOR_DEFAULTS,
    default_server_image,
    gpu_product_label,
    is_cpu_server_image,
)

MiB = 2**20
GiB = 2**30

SELECTOR_5060TI = {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-5060-Ti"}
SELECTOR_5070TI = {"nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-5070-Ti"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _error(selection: Any, path: str = "hardware") -> str:
    with pytest.raises(ConfigError) as info:
        resolve_profile(selection, path)
    return str(info.value)


def _custom(**overrides: Any) -> dict[str, Any]:
    """A whole custom profile (no extends): one RTX 3090 in a 32 GiB box, plus the overrides."""
    profile: dict[str, Any] = {
        "name": "my-box",
        "gpu": {"vendor": "nvidia", "product": "NVIDIA GeForce RTX 3090", "memory": "24Gi", "memoryBandwidth": "936G"},
        "hostMemory": "32Gi",
        "hostMemoryBandwidth": "51.2G",
        "cpuCores": 8,
    }
    return merge_patch(profile, overrides)


# ---------------------------------------------------------------------------------------------------------
# Built-in profiles
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "gpus", "gpu_memory", "gpu_bandwidth", "host_memory", "cores", "product_label", "image"),
    [
        ("cpu-only", 0, None, None, 32 * GiB, 8, None, "ghcr.io/ggml-org/llama.cpp:server"),
        (
            "dual-rtx5060ti", 2, 16311 * MiB, 448e9, 64 * GiB, 16,
            "NVIDIA-GeForce-RTX-5060-Ti", "ghcr.io/ggml-org/llama.cpp:server-cuda13",
        ),
        (
            "rtx4090", 1, 24564 * MiB, 1008e9, 64 * GiB, 16,
            "NVIDIA-GeForce-RTX-4090", "ghcr.io/ggml-org/llama.cpp:server-cuda",
        ),
        (
            "h100-80gb", 8, 81559 * MiB, 3.35e12, 2048 * GiB, 112,
            "NVIDIA-H100-80GB-HBM3", "ghcr.io/ggml-org/llama.cpp:server-cuda",
        ),
    ],
)  # fmt: skip
def test_builtin_profile(
    name: str,
    gpus: int,
    gpu_memory: int | None,
    gpu_bandwidth: float | None,
    host_memory: int,
    cores: int,
    product_label: str | None,
    image: str,
) -> None:
    profile = resolve_profile(name, "hardware")
    assert profile.name == name
    assert profile.gpu_count == gpus
    assert profile.cpu_cores == cores
    assert profile.image == image
    assert profile.usable_host_memory == host_memory - 4 * GiB
    assert profile.sources, "every built-in says where its figures come from"
    if profile.gpu is None:
        assert gpu_memory is None
        assert (profile.usable_gpu_memory, profile.gpu_resource_name) == (0, None)
        assert (profile.node_selector, profile.tolerations) == ({}, [])
        return
    assert parse_quantity(profile.gpu.memory) == gpu_memory
    assert parse_quantity(profile.gpu.memory_bandwidth) == pytest.approx(gpu_bandwidth)
    assert profile.gpu.product_label == product_label
    assert profile.node_selector == {"nvidia.com/gpu.product": product_label}
    assert [t.wire() for t in profile.tolerations] == [GPU_TOLERATION]
    assert profile.gpu_resource_name == "nvidia.com/gpu"


def test_builtin_names() -> None:
    assert sorted(builtin_profiles()) == ["cpu-only", "dual-rtx5060ti", "h100-80gb", "rtx4090"]


def test_builtin_profiles_cannot_be_edited_through_the_cache() -> None:
    builtin_profiles().pop("rtx4090")
    assert "rtx4090" in builtin_profiles()


@pytest.mark.parametrize(
    ("name", "host_bandwidth"),
    [
        ("cpu-only", 2 * 8 * 3200e6),  # DDR4-3200, 2 channels
        ("dual-rtx5060ti", 2 * 8 * 5600e6),  # DDR5-5600, 2 channels
        ("rtx4090", 2 * 8 * 5200e6),  # DDR5-5200, 2 channels
        ("h100-80gb", 16 * 8 * 4400e6),  # 2 sockets x 8 channels DDR5-4400 (2 DIMMs per channel)
    ],
)
def test_host_memory_bandwidth_is_channels_times_transfer_rate(name: str, host_bandwidth: float) -> None:
    assert parse_quantity(resolve_profile(name, "hardware").host_memory_bandwidth) == pytest.approx(host_bandwidth)


# ---------------------------------------------------------------------------------------------------------
# Usable memory
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selection", "usable_gpu", "usable_host"),
    [
        ("dual-rtx5060ti", (16311 - 512) * MiB, 60 * GiB),
        ("rtx4090", (24564 - 512) * MiB, 60 * GiB),
        ("cpu-only", 0, 28 * GiB),
        ({"extends": "dual-rtx5060ti", "reserved": {"gpuMemory": "1Gi"}}, (16311 - 1024) * MiB, 60 * GiB),
        ({"extends": "dual-rtx5060ti", "reserved": {"hostMemory": "8Gi"}}, (16311 - 512) * MiB, 56 * GiB),
        (_custom(reserved={"gpuMemory": "0", "hostMemory": "2Gi"}), 24 * GiB, 30 * GiB),
    ],
)
def test_usable_memory(selection: Any, usable_gpu: int, usable_host: int) -> None:
    profile = resolve_profile(selection, "hardware")
    assert profile.usable_gpu_memory == usable_gpu
    assert profile.usable_host_memory == usable_host


# ---------------------------------------------------------------------------------------------------------
# extends + overrides, and whole custom profiles
# ---------------------------------------------------------------------------------------------------------


def test_extends_overrides_one_figure_and_keeps_the_rest() -> None:
    base = resolve_profile("dual-rtx5060ti", "hardware")
    profile = resolve_profile({"extends": "dual-rtx5060ti", "hostMemory": "128Gi"}, "hardware")
    assert profile.name == "dual-rtx5060ti+custom"
    assert profile.host_memory == "128Gi"
    assert profile.usable_host_memory == 124 * GiB
    assert profile.description.endswith("Overridden: hostMemory.")
    for field in ("gpu", "cpu_cores", "host_memory_bandwidth", "node_selector", "tolerations", "image", "sources"):
        assert getattr(profile, field) == getattr(base, field), field


@pytest.mark.parametrize(
    ("overrides", "expect"),
    [
        # nested mappings merge: the other gpu fields stay
        ({"gpu": {"count": 1}}, {"gpu_count": 1, "usable_gpu_memory": (16311 - 512) * MiB}),
        # node selectors merge too; null removes a key (JSON merge patch)
        (
            {"nodeSelector": {"kubernetes.io/hostname": "desk"}},
            {"node_selector": {**SELECTOR_5060TI, "kubernetes.io/hostname": "desk"}},
        ),
        ({"nodeSelector": {"nvidia.com/gpu.product": None}}, {"node_selector": {}}),
        # lists replace
        ({"tolerations": []}, {"tolerations": []}),
        ({"sources": ["measured on my desk"]}, {"sources": ["measured on my desk"]}),
        # a given name wins over <base>+custom
        ({"name": "desk"}, {"name": "desk"}),
        # a derived default follows the override: productLabel from product (selector updated with it)
        (
            {"gpu": {"product": "NVIDIA GeForce RTX 5070 Ti"}, "nodeSelector": SELECTOR_5070TI},
            {"node_selector": SELECTOR_5070TI},
        ),
        # resourceName override, e.g. a MIG slice or a renamed time-sliced resource
        ({"gpu": {"resourceName": "nvidia.com/gpu.shared"}}, {"gpu_resource_name": "nvidia.com/gpu.shared"}),
    ],
)  # fmt: skip
def test_extends_merges(overrides: dict[str, Any], expect: dict[str, Any]) -> None:
    profile = resolve_profile({"extends": "dual-rtx5060ti", **overrides}, "hardware")
    for attribute, value in expect.items():
        assert getattr(profile, attribute) == value, attribute


def test_extends_cpu_only_with_a_gpu_and_its_image() -> None:
    profile = resolve_profile(
        {
            "extends": "cpu-only",
            "gpu": {"vendor": "amd", "product": "AMD Radeon RX 7900 XTX", "memory": "24Gi", "memoryBandwidth": "960G"},
            "image": "ghcr.io/ggml-org/llama.cpp:server-rocm",
        },
        "hardware",
    )
    assert (profile.gpu_count, profile.gpu_resource_name) == (1, "amd.com/gpu")


def test_whole_custom_profile() -> None:
    profile = resolve_profile(_custom(), "hardware")
    assert profile.name == "my-box"
    assert isinstance(profile.gpu, GpuHardware)
    assert profile.gpu.count == 1  # default
    assert profile.gpu.product_label == "NVIDIA-GeForce-RTX-3090"
    assert profile.image == "ghcr.io/ggml-org/llama.cpp:server-cuda"  # vendor default
    assert profile.reserved.gpu_memory == "512Mi"
    assert profile.reserved.host_memory == "4Gi"
    assert (profile.node_selector, profile.tolerations, profile.sources) == ({}, [], [])


def test_a_profile_object_passes_through() -> None:
    profile = resolve_profile("rtx4090", "hardware")
    assert resolve_profile(profile, "hardware") is profile


@pytest.mark.parametrize(
    ("vendor", "image"),
    [
        (None, "ghcr.io/ggml-org/llama.cpp:server"),
        ("nvidia", "ghcr.io/ggml-org/llama.cpp:server-cuda"),
        ("amd", "ghcr.io/ggml-org/llama.cpp:server-rocm"),
        ("intel", "ghcr.io/ggml-org/llama.cpp:server-intel"),
    ],
)
def test_default_image_by_vendor(vendor: str | None, image: str) -> None:
    gpu = None if vendor is None else {"vendor": vendor, "product": "X", "memory": "8Gi", "memoryBandwidth": "1T"}
    assert resolve_profile(_custom(gpu=gpu), "hardware").image == image
    assert default_server_image(vendor) == image


# ---------------------------------------------------------------------------------------------------------
# Errors: path first, then the value, then what is allowed
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selection", "path", "expected"),
    [
        (
            "dual-rtx5060",
            "hardware",
            "llmkube:hardware: 'dual-rtx5060' is not a built-in hardware profile; did you mean dual-rtx5060ti? "
            "known: cpu-only, dual-rtx5060ti, h100-80gb, rtx4090",
        ),
        (
            "RTX4090",
            "services.qwen.hardwareProfile",
            "llmkube:services.qwen.hardwareProfile: 'RTX4090' is not a built-in hardware profile; "
            "did you mean rtx4090?",
        ),
        (
            {"extends": "h100", "hostMemory": "1Ti"},
            "hardware",
            "llmkube:hardware.extends: 'h100' is not a built-in hardware profile; did you mean h100-80gb?",
        ),
        ({"extends": 4090}, "hardware", "llmkube:hardware.extends: 4090 is not a built-in hardware profile; known:"),
        (["rtx4090"], "hardware", "llmkube:hardware: ['rtx4090'] is not a hardware profile: write a built-in name"),
        (
            {"extends": "dual-rtx5060ti", "gpu": {"memry": "16Gi"}},
            "hardware",
            "llmkube:hardware.gpu.memry: unknown field memry; did you mean memory?",
        ),
        (
            {"extends": "dual-rtx5060ti", "hostMemroy": "128Gi"},
            "services.qwen.hardwareProfile",
            "llmkube:services.qwen.hardwareProfile.hostMemroy: unknown field hostMemroy; did you mean hostMemory",
        ),
        (
            {"extends": "rtx4090", "tolerations": [{"key": "nvidia.com/gpu", "efect": "NoSchedule"}]},
            "hardware",
            "llmkube:hardware.tolerations[0].efect: unknown field efect; did you mean effect?",
        ),
        (
            {"extends": "dual-rtx5060ti", "gpu": {"count": 9}},
            "hardware",
            "llmkube:hardware.gpu.count: 9: input should be less than or equal to 8",
        ),
        (
            {"extends": "dual-rtx5060ti", "gpu": {"vendor": "nvidai"}},
            "hardware",
            "llmkube:hardware.gpu.vendor: 'nvidai': input should be 'nvidia', 'amd' or 'intel'",
        ),
        (
            {"extends": "dual-rtx5060ti", "hostMemory": "64GB"},
            "hardware",
            "llmkube:hardware.hostMemory: '64GB' is not a Kubernetes quantity",
        ),
        (
            {"extends": "dual-rtx5060ti", "gpu": {"memoryBandwidth": "0"}},
            "hardware",
            "llmkube:hardware.gpu.memoryBandwidth: 0 must be more than 0",
        ),
        (
            {"extends": "dual-rtx5060ti", "cpuCores": None},
            "hardware",
            "llmkube:hardware.cpuCores: is required",
        ),
        (
            {"extends": "dual-rtx5060ti", "reserved": {"gpuMemory": "16Gi"}},
            "hardware",
            "llmkube:hardware.reserved: gpuMemory 16Gi leaves nothing of the 16311Mi of each GPU; lower it",
        ),
        (
            {"extends": "cpu-only", "reserved": {"hostMemory": "32Gi"}},
            "hardware",
            "llmkube:hardware.reserved: hostMemory 32Gi leaves nothing of the 32Gi hostMemory; lower it",
        ),
        (
            {"extends": "dual-rtx5060ti", "gpu": {"product": "NVIDIA GeForce RTX 4060 Ti"}},
            "hardware",
            "llmkube:hardware.nodeSelector: nvidia.com/gpu.product=NVIDIA-GeForce-RTX-5060-Ti does not select the "
            "profile's GPU NVIDIA GeForce RTX 4060 Ti; its label value is NVIDIA-GeForce-RTX-4060-Ti",
        ),
        (
            _custom(name=None),
            "hardware",
            "llmkube:hardware.name: is required",
        ),
    ],
)
def test_errors(selection: Any, path: str, expected: str) -> None:
    assert expected in _error(selection, path)


@pytest.mark.parametrize(
    "image",
    [
        "ghcr.io/ggml-org/llama.cpp:server",
        "ghcr.io/ggml-org/llama.cpp:server-b9445",
        "ghcr.io/ggml-org/llama.cpp:server@sha256:" + "0" * 64,
        "ghcr.io/ggerganov/llama.cpp:server",
    ],
)
def test_cpu_image_on_a_gpu_profile_is_rejected(image: str) -> None:
    message = _error({"extends": "dual-rtx5060ti", "image": image})
    assert message == (
        f"llmkube:hardware.image: {image} is llama.cpp's CPU-only build, but this profile has 2 x NVIDIA GeForce "
        "RTX 5060 Ti: use a GPU build such as ghcr.io/ggml-org/llama.cpp:server-cuda"
    )


def test_adding_a_gpu_to_cpu_only_without_changing_the_image_is_rejected() -> None:
    gpu = {"vendor": "nvidia", "product": "NVIDIA GeForce RTX 3090", "memory": "24Gi", "memoryBandwidth": "936G"}
    assert "llmkube:hardware.image: ghcr.io/ggml-org/llama.cpp:server is llama.cpp's CPU-only build" in _error(
        {"extends": "cpu-only", "gpu": gpu}
    )


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_profile({"extends": "rtx4090", "gpu": {"count": 0}, "cpuCores": 0}, "hardware")
    assert [p.path for p in info.value.problems] == ["hardware.cpuCores", "hardware.gpu.count"]


@pytest.mark.parametrize(
    ("image", "cpu"),
    [
        ("ghcr.io/ggml-org/llama.cpp:server", True),
        ("ghcr.io/ggml-org/llama.cpp:server-b6000", True),
        ("ghcr.io/ggml-org/llama.cpp:server-cuda", False),
        ("ghcr.io/ggml-org/llama.cpp:server-cuda13-b9445", False),
        ("ghcr.io/ggml-org/llama.cpp:server-vulkan", False),
        ("ghcr.io/ggml-org/llama.cpp:full", False),
        ("registry.local:5000/llama.cpp", False),  # a registry port is not a tag
        ("example.com/my/llama-server:server", False),  # someone else's image: cannot tell
    ],
)
def test_is_cpu_server_image(image: str, cpu: bool) -> None:
    assert is_cpu_server_image(image) is cpu


# ---------------------------------------------------------------------------------------------------------
# GPU resource names and product labels
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "override", "resource"),
    [
        ("nvidia", None, "nvidia.com/gpu"),
        ("amd", None, "amd.com/gpu"),
        ("intel", None, "gpu.intel.com/i915"),
        ("nvidia", "nvidia.com/mig-1g.10gb", "nvidia.com/mig-1g.10gb"),
        ("intel", "gpu.intel.com/xe", "gpu.intel.com/xe"),
        ("amd", "", "amd.com/gpu"),  # empty means unset
    ],
)
def test_gpu_resource_name(vendor: str, override: str | None, resource: str) -> None:
    assert gpu_resource_name(vendor, override) == resource
    gpu = {"vendor": vendor, "product": "X", "memory": "8Gi", "memoryBandwidth": "1T"}
    if override:
        gpu["resourceName"] = override
    image = {"image": "ghcr.io/ggml-org/llama.cpp:server-vulkan"}
    assert resolve_profile(_custom(gpu=gpu, **image), "hardware").gpu_resource_name == resource


def test_gpu_resource_name_unknown_vendor() -> None:
    with pytest.raises(ValueError, match="unknown GPU vendor 'matrox'; known: nvidia, amd, intel"):
        gpu_resource_name("matrox")


def test_every_vendor_has_defaults() -> None:
    assert sorted(VENDOR_DEFAULTS) == sorted(get_args(GpuVendor))


@pytest.mark.parametrize(
    ("product", "label"),
    [
        ("NVIDIA GeForce RTX 5060 Ti", "NVIDIA-GeForce-RTX-5060-Ti"),
        ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"),
        ("  NVIDIA  A100-SXM4-80GB ", "NVIDIA-A100-SXM4-80GB"),
        ("NVIDIA RTX A6000 (rev 2)", "NVIDIA-RTX-A6000-rev-2"),
    ],
)
def test_gpu_product_label(product: str, label: str) -> None:
    assert gpu_product_label(product) == label


def test_profile_schema_documents_every_field() -> None:
    # The README config reference is generated from these descriptions.
    for model in (HardwareProfile, GpuHardware):
        schema = model.model_json_schema()
        undocumented = [name for name, prop in schema["properties"].items() if not prop.get("description")]
        assert undocumented == [], model.__name__


def test_removing_the_gpus_removes_the_gpu_image_selector_and_tolerations() -> None:
    from llmkube_components.hardware import resolve_profile

    profile = resolve_profile({"extends": "dual-rtx5060ti", "gpu": None}, "hardware")
    assert (profile.gpu, profile.node_selector, profile.tolerations) == (None, {}, [])
    assert profile.image == "ghcr.io/ggml-org/llama.cpp:server"
