"""The stack config contract: everything under the ``llmkube:`` namespace of a Pulumi stack file."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import IMAGE_PATTERN, ApiModel, DnsLabel, DnsSubdomain, PositiveQuantity, Quantity
from .model import ModelSpec
from .service import InferenceServiceSpec

Delivery = Literal["direct", "operator"]

# Namespaces of the cluster's own components: a stack never deploys into them, nor labels them.
RESERVED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
# Namespaces every cluster has and shares: a stack may deploy into one as it is, never create (relabel) it.
SHARED_NAMESPACES = frozenset({"default"})

OPERATOR_VERSION = "0.9.19"
OPERATOR_IMAGE_REPOSITORY = "ghcr.io/defilantech/llmkube-controller"

# Controller requests and limits when the stack sets none: upstream's own (config/manager/manager.yaml).
# Upstream raised memory to 512Mi/2Gi in v0.3.1 after the controller was OOM-killed during model downloads
# (it copies, hashes and parses GGUF files in process), so smaller defaults are not safe.
DEFAULT_OPERATOR_CPU_REQUEST = "10m"
DEFAULT_OPERATOR_MEMORY_REQUEST = "512Mi"
DEFAULT_OPERATOR_CPU_LIMIT = "500m"
DEFAULT_OPERATOR_MEMORY_LIMIT = "2Gi"


class OperatorResources(ApiModel):
    """Requests and limits of the controller container."""

    cpu_request: Quantity | None = Field(None, description=f"CPU request (default {DEFAULT_OPERATOR_CPU_REQUEST}).")
    memory_request: Quantity | None = Field(
        None, description=f"Memory request (default {DEFAULT_OPERATOR_MEMORY_REQUEST})."
    )
    cpu_limit: Quantity | None = Field(None, description=f"CPU limit (default {DEFAULT_OPERATOR_CPU_LIMIT}).")
    memory_limit: Quantity | None = Field(None, description=f"Memory limit (default {DEFAULT_OPERATOR_MEMORY_LIMIT}).")


class OperatorSettings(ApiModel):
    """How the LLMKube operator is installed (delivery operator)."""

    version: str = Field(
        OPERATOR_VERSION,
        pattern=r"^v?[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$",
        description="LLMKube controller version; picks the image tag.",
    )
    namespace: DnsLabel = Field("llmkube-system", description="Namespace of the controller.")
    image: str | None = Field(
        None, pattern=IMAGE_PATTERN, description=f"Controller image; default {OPERATOR_IMAGE_REPOSITORY}:<version>."
    )
    install: bool = Field(
        True, description="Install the controller and CRDs; false when the cluster already runs LLMKube."
    )
    resources: OperatorResources | None = Field(None, description="Controller requests and limits.")

    @property
    def image_ref(self) -> str:
        # Released images are tagged with the bare version (0.9.19), not the git tag (v0.9.19).
        return self.image or f"{OPERATOR_IMAGE_REPOSITORY}:{self.version.removeprefix('v')}"


# The operator's defaults for its shared cache volume (cmd/main.go --model-cache-size and
# --model-cache-access-mode). A PVC can grow (where the class allows expansion) but never shrink, so the
# size is an explicit choice, never derived. RWO is what every storage class offers: pods on one node share
# it; services on several nodes need an RWX class.
DEFAULT_CACHE_SIZE = "100Gi"
AccessMode = Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]
DEFAULT_CACHE_ACCESS_MODE: AccessMode = "ReadWriteOnce"


CacheMode = Literal["shared", "perService"]

# The cache volumes' names, as the operator names them (model_storage.go ModelCachePVCName, modelCachePVCName).
SHARED_CACHE_PVC_NAME = "llmkube-model-cache"
PER_SERVICE_CACHE_SUFFIX = "-model-cache"


class CacheSettings(ApiModel):
    """The namespace's model cache volumes (delivery direct; the operator manages its own)."""

    mode: CacheMode = Field(
        "shared",
        description="shared: one volume for the namespace (the operator's default); perService: one per service, "
        "deleted with it.",
    )
    size: PositiveQuantity = Field(
        DEFAULT_CACHE_SIZE, description="Requested size; a PVC cannot shrink later, so leave room for new models."
    )
    storage_class: DnsSubdomain | None = Field(None, description="StorageClass; default: the cluster's.")
    access_mode: AccessMode = Field(
        DEFAULT_CACHE_ACCESS_MODE,
        description="ReadWriteMany lets services on several nodes share one cache (needs such storage).",
    )


class StackConfig(ApiModel):
    """Everything a stack file sets under llmkube:."""

    delivery: Delivery = Field(
        "direct",
        description="direct: Pulumi renders the llama.cpp workloads; operator: CRDs, the LLMKube "
        "operator and Model/InferenceService custom resources.",
    )
    namespace: DnsLabel = Field("llmkube", description="Namespace of the models and services.")
    create_namespace: bool = Field(
        True,
        description="Create the namespace and set its Pod Security labels (false when it exists already; it is "
        "then used as it is).",
    )
    allow_host_path: bool = Field(
        False,
        description="Allow models from a path of the node (file:// or an absolute path), mounted as hostPath: "
        "the namespace's Pod Security then has to be privileged.",
    )
    hardware: str | dict[str, Any] = Field(
        "cpu-only",
        description="Hardware profile: a built-in name, or {extends: name, ...overrides}, or a whole profile.",
    )
    operator: OperatorSettings = Field(
        default_factory=OperatorSettings, description="Operator install settings (delivery operator)."
    )
    model_cache: CacheSettings = Field(
        default_factory=CacheSettings, description="The shared model cache volume (delivery direct)."
    )
    models: dict[str, ModelSpec] = Field(default_factory=dict, description="Models by name.")
    services: dict[str, InferenceServiceSpec] = Field(default_factory=dict, description="Inference services by name.")
