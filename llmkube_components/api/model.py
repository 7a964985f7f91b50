"""Model: a model file and the hardware it wants (LLMKube ``inference.llmkube.dev/v1alpha1`` Model spec)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import ApiModel, Quantity, crd_default, llmkube_only, pattern

SOURCE_PATTERN = pattern(
    r"^(https?|file|pvc|hf)://.+$|^/[^\s]+$", "an http(s)://, hf://, pvc:// or file:// URL, or an absolute path"
)
SHA256_PATTERN = pattern(r"^[a-fA-F0-9]{64}$", "64 hexadecimal digits")
Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN)]
RESOURCE_NAME_PATTERN = pattern(r"^[a-z0-9.\-]+/[a-z0-9._\-]+$", "an extended resource name such as nvidia.com/gpu")

ModelFormat = Literal["gguf", "mlx", "safetensors", "pytorch", "custom"]
Accelerator = Literal["cpu", "metal", "cuda", "rocm", "intel", "vulkan"]
GpuVendor = Literal["nvidia", "amd", "intel"]
ShardingStrategy = Literal["layer", "tensor", "row", "pipeline", "none"]

# What the operator's CRD fills in for unset fields (its kubebuilder defaults); ours carries the same.
DEFAULT_FORMAT: ModelFormat = "gguf"
DEFAULT_ACCELERATOR: Accelerator = "cpu"
DEFAULT_GPU_VENDOR: GpuVendor = "nvidia"
DEFAULT_SHARDING: ShardingStrategy = "layer"
# Layers are counted per model and the largest models have a few hundred; a bound keeps values inside
# the operator's int32 and catches a pasted byte count.
MAX_LAYERS = 4096


class GPUShardingSpec(ApiModel):
    """How a model is spread over several GPUs."""

    strategy: ShardingStrategy | None = Field(
        None,
        json_schema_extra=crd_default(DEFAULT_SHARDING),
        description=f"Split strategy across GPUs (default {DEFAULT_SHARDING}): layer (llama.cpp --split-mode "
        "layer), row, tensor, pipeline or none.",
    )
    layer_split: list[str] | None = Field(
        None,
        description="One entry per GPU: the layer range it holds, as the operator writes it (['0-24', '25-39']), "
        "or its share (['3', '2']); becomes --tensor-split. Even split when unset.",
    )


class GPUSpec(ApiModel):
    """The GPUs a model is served on."""

    enabled: bool | None = Field(None, description="Serve this model on GPUs.")
    count: int | None = Field(None, ge=0, le=8, description="Number of GPUs (0-8).")
    memory: Quantity | None = Field(None, description="GPU memory the model needs, e.g. 16Gi.")
    vendor: GpuVendor | None = Field(
        None,
        json_schema_extra=crd_default(DEFAULT_GPU_VENDOR),
        description=f"GPU vendor (default {DEFAULT_GPU_VENDOR}); picks the device-plugin resource name.",
    )
    resource_name: str | None = Field(
        None,
        pattern=RESOURCE_NAME_PATTERN,
        description="Extended resource to request instead of the vendor default, e.g. nvidia.com/mig-1g.10gb.",
    )
    layers: int | None = Field(
        None,
        ge=-1,
        le=MAX_LAYERS,
        description="Layers to offload to the GPUs (--n-gpu-layers); -1 or unset offloads all.",
    )
    sharding: GPUShardingSpec | None = Field(None, description="Multi-GPU split.")


class HardwareSpec(ApiModel):
    """Hardware the model runs on."""

    accelerator: Accelerator | None = Field(
        None,
        json_schema_extra=crd_default(DEFAULT_ACCELERATOR),
        description=f"Compute backend (default {DEFAULT_ACCELERATOR}): cpu, metal, cuda, rocm, intel or vulkan.",
    )
    gpu: GPUSpec | None = Field(None, description="GPU requirements.")


class ModelResources(ApiModel):
    """Resources the model needs."""

    cpu: Quantity | None = Field(None, description="CPU the model needs, e.g. 8 or 500m.")
    memory: Quantity | None = Field(None, description="Memory the model needs, e.g. 48Gi.")


class ModelSpec(ApiModel):
    """A model file to serve: where it comes from, what it is, and what hardware it wants."""

    source: str = Field(
        ...,
        pattern=SOURCE_PATTERN,
        description="Where the model comes from: an http(s)://, hf://, pvc:// or file:// URL, or an absolute path.",
    )
    sha256: str | None = Field(
        None, pattern=SHA256_PATTERN, description="SHA-256 of the model file (64 hex digits); checked after download."
    )
    format: ModelFormat | None = Field(
        None,
        json_schema_extra=crd_default(DEFAULT_FORMAT),
        description=f"File format (default {DEFAULT_FORMAT}): gguf, mlx, safetensors, pytorch, custom.",
    )
    quantization: str | None = Field(None, description="Quantization of the weights, e.g. Q4_K_M (informational).")
    hardware: HardwareSpec | None = Field(None, description="Hardware the model wants.")
    resources: ModelResources | None = Field(None, description="CPU and memory the model needs.")
    files: list[str] | None = Field(
        None, description="Further files of a multi-file model (e.g. GGUF splits), downloaded beside the first."
    )
    # A map beside files rather than objects in it: the operator's CRD and controller take files as strings,
    # so the shape of files stays theirs and a custom resource simply goes without the digests.
    file_sha256: dict[str, Sha256] | None = Field(
        None,
        json_schema_extra=llmkube_only(),
        description="llmkube only: SHA-256 of further files, keyed by their entry in files (64 hex digits each); "
        "checked after download (delivery direct), like sha256 for the model file.",
    )
    catalog: str | None = Field(
        None,
        min_length=1,
        json_schema_extra=llmkube_only(),
        description="llmkube only: the planner's built-in architecture entry for this model (e.g. qwen3-30b-a3b), "
        "used when the file's metadata cannot be read; default: recognised from the file name.",
    )
