"""Model: a model file and the hardware it wants (LLMKube ``inference.llmkube.dev/v1alpha1`` Model spec)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from .base import ApiModel, NonEmpty, Quantity, crd_default, crd_schema, llmkube_only, pattern
from .core import LocalObjectReference, Toleration

# What the typed API takes: a URL of a scheme the downloaders know, an absolute path, or a bare repository id
# (owner/name, the Hugging Face form) as upstream's pattern allows. The CRD carries upstream's own pattern.
SOURCE_PATTERN = pattern(
    r"^(https?|file|pvc|hf|s3)://.+$|^/[^\s]+$|^[a-zA-Z0-9][\w\-.]*/[\w\-.]+(/[\w\-.]+)*$",
    "an http(s)://, hf://, s3://, pvc:// or file:// URL, an absolute path, or a repository id such as "
    "owner/name/file.gguf",
)
UPSTREAM_SOURCE_PATTERN = r"^(https?|file|pvc|hf|s3)://.*|^/[^\s]+$|^[a-zA-Z0-9][\w\-\.\/]+$"
SHA256_PATTERN = pattern(r"^[a-fA-F0-9]{64}$", "64 hexadecimal digits")
Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN)]
RESOURCE_NAME_PATTERN = pattern(r"^[a-z0-9.\-]+/[a-z0-9._\-]+$", "an extended resource name such as nvidia.com/gpu")

ModelFormat = Literal["gguf", "mlx", "safetensors", "pytorch", "custom"]
RefreshPolicy = Literal["IfNotPresent", "OnChange"]
GpuRuntime = Literal["vulkan", "rocm"]
Accelerator = Literal["cpu", "metal", "cuda", "rocm", "intel", "vulkan"]
GpuVendor = Literal["nvidia", "amd", "intel"]
ShardingStrategy = Literal["layer", "tensor", "row", "pipeline", "none"]

# What the operator's CRD fills in for unset fields (its kubebuilder defaults); ours carries the same.
DEFAULT_FORMAT: ModelFormat = "gguf"
DEFAULT_ACCELERATOR: Accelerator = "cpu"
DEFAULT_GPU_VENDOR: GpuVendor = "nvidia"
DEFAULT_SHARDING: ShardingStrategy = "layer"
DEFAULT_REFRESH_POLICY: RefreshPolicy = "IfNotPresent"
# Upstream's bound on DRA claims per model.
MAX_RESOURCE_CLAIMS = 16
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


class GPUResourceClaim(ApiModel):
    """A Dynamic Resource Allocation claim the server's pod uses for its GPUs."""

    name: str = Field(..., description="Name of the claim inside the pod.")
    resource_claim_name: str | None = Field(None, description="An existing ResourceClaim to use.")
    resource_claim_template_name: str | None = Field(
        None, description="A ResourceClaimTemplate to create a claim per pod from."
    )

    @model_validator(mode="after")
    def _one_source(self) -> GPUResourceClaim:
        if (self.resource_claim_name is None) == (self.resource_claim_template_name is None):
            raise PydanticCustomError(
                "llmkube_rule", "set exactly one of resourceClaimName and resourceClaimTemplateName", {}
            )
        return self


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
    layers: (
        Annotated[int, Field(ge=-1, le=MAX_LAYERS), crd_schema({"type": "integer", "format": "int32", "minimum": -1})]
        | None
    ) = Field(
        None,
        description=f"Layers to offload to the GPUs (--n-gpu-layers); -1 or unset offloads all (at most {MAX_LAYERS}).",
    )
    sharding: GPUShardingSpec | None = Field(None, description="Multi-GPU split.")
    runtime: GpuRuntime | None = Field(
        None,
        description="GPU runtime when it is not the vendor's own: vulkan or rocm (picks the server image flavour; "
        "delivery direct takes the image from the hardware profile or spec.image).",
    )
    toleration_key: str | None = Field(
        None,
        pattern=RESOURCE_NAME_PATTERN,
        description="Taint key of the GPU nodes, tolerated with operator Exists and effect NoSchedule; default: "
        "the GPU resource name.",
    )
    resource_claims: list[GPUResourceClaim] | None = Field(
        None,
        max_length=MAX_RESOURCE_CLAIMS,
        description="Dynamic Resource Allocation claims for the GPUs instead of a device-plugin resource "
        "(pod.spec.resourceClaims and the container's resources.claims).",
    )

    @model_validator(mode="after")
    def _claims_or_resource(self) -> GPUSpec:
        if self.resource_name is not None and self.resource_claims:
            raise PydanticCustomError(
                "llmkube_rule", "resourceClaims and resourceName are mutually exclusive: set one of them", {}
            )
        return self


class HardwareSpec(ApiModel):
    """Hardware the model runs on."""

    accelerator: Accelerator | None = Field(
        None,
        json_schema_extra=crd_default(DEFAULT_ACCELERATOR),
        description=f"Compute backend (default {DEFAULT_ACCELERATOR}): cpu, metal, cuda, rocm, intel or vulkan.",
    )
    gpu: GPUSpec | None = Field(None, description="GPU requirements.")
    memory_budget: Quantity | None = Field(
        None,
        description="Unified-memory budget for the model on Apple silicon (the operator's Metal agent); "
        "not used by Kubernetes workloads.",
    )
    memory_fraction: Annotated[float, Field(gt=0, le=1), crd_schema({"type": "number"})] | None = Field(
        None,
        description="Share of unified memory for the model on Apple silicon (the operator's Metal agent); "
        "not used by Kubernetes workloads.",
    )


class ModelResources(ApiModel):
    """Resources the model needs."""

    cpu: Quantity | None = Field(None, description="CPU the model needs, e.g. 8 or 500m.")
    memory: Quantity | None = Field(None, description="Memory the model needs, e.g. 48Gi.")


class ModelSpec(ApiModel):
    """A model file to serve: where it comes from, what it is, and what hardware it wants."""

    source: Annotated[
        str, Field(pattern=SOURCE_PATTERN), crd_schema({"type": "string", "pattern": UPSTREAM_SOURCE_PATTERN})
    ] = Field(
        ...,
        description="Where the model comes from: an http(s)://, hf://, s3://, pvc:// or file:// URL, an absolute "
        "path, or a bare repository id (owner/name/file.gguf, fetched from Hugging Face).",
    )
    source_secret_ref: LocalObjectReference | None = Field(
        None,
        description="A Secret of the model's namespace whose keys become the downloader's environment: "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL) for "
        "s3://, HF_TOKEN for Hugging Face.",
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
    mmproj: NonEmpty | None = Field(
        None,
        description="Multimodal projector file (a URL, or a name in files) staged beside the model and passed "
        "as --mmproj.",
    )
    refresh_policy: RefreshPolicy | None = Field(
        None,
        json_schema_extra=crd_default(DEFAULT_REFRESH_POLICY),
        description=f"IfNotPresent (default {DEFAULT_REFRESH_POLICY}): a cached file is used as it is; OnChange: "
        "the source is checked at every start and the file fetched again when it changed.",
    )
    prefetch: bool | None = Field(
        None, description="Fill the shared model cache ahead of any service (a Job in delivery direct)."
    )
    prefetch_tolerations: list[Toleration] | None = Field(None, description="Tolerations of the prefetch Job's pod.")
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
